"""Helpers of deploy/check.sh (stdlib + PyYAML): the parts that are easier to say in Python than in bash.

    python deploy/checks.py yaml                       parse every YAML/JSON file under deploy/
    python deploy/checks.py compose-lint               structural check of docker-compose.yml (no docker-compose)
    python deploy/checks.py copy-build-context DEST    lay out DEST as the Dockerfile's build stage sees /src
    python deploy/checks.py healthcheck-cmd            the HEALTHCHECK command, one argument per line

Each prints what it checked and exits non-zero on a problem.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"


class CheckError(Exception):
    pass


# --- YAML -------------------------------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def check_yaml() -> list[str]:
    import yaml

    done = []
    for path in yaml_files():
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            raise CheckError(f"{path.relative_to(REPO)}: {exc}") from None
        if not docs:
            raise CheckError(f"{path.relative_to(REPO)}: empty")
        done.append(f"{path.relative_to(REPO)} ({len(docs)} document{'s' if len(docs) > 1 else ''})")
    for path in sorted(DEPLOY.rglob("*.json")):
        try:
            json.loads(path.read_text())
        except ValueError as exc:
            raise CheckError(f"{path.relative_to(REPO)}: {exc}") from None
        done.append(f"{path.relative_to(REPO)} (JSON)")
    return done


# --- env files and compose ------------------------------------------------------------------------------------

_ASSIGN = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def read_env_file(path: Path, include_commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them; with include_commented also `# KEY=VALUE` (documented defaults)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = _ASSIGN.match(line)
        if m and (include_commented or not m.group(1)):
            values[m.group(2)] = m.group(3).strip()
    return values


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} ($$ = a literal $)."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise CheckError(f"required variable {name} is missing: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return _VAR.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    import yaml

    env = read_env_file(ENV_EXAMPLE) if env is None else env
    data = yaml.safe_load(interpolate(COMPOSE.read_text(), env))
    if not isinstance(data, dict):
        raise CheckError("docker-compose.yml: not a mapping")
    return data


def compose_lint() -> list[str]:
    """What `docker-compose config` would catch first, for machines without it. Not the full compose schema."""
    data = load_compose()
    done = [f"{COMPOSE.relative_to(REPO)}: interpolated with deploy/.env.example, every required variable set"]
    allowed = {"services", "volumes", "networks", "configs", "secrets", "name", "version"}
    extra = [k for k in data if k not in allowed and not k.startswith("x-")]
    if extra:
        raise CheckError(f"unknown top-level keys: {extra}")
    services = data.get("services") or {}
    volumes = set(data.get("volumes") or {})
    for name, svc in services.items():
        where = f"service {name}"
        if not isinstance(svc, dict) or not (svc.get("image") or svc.get("build")):
            raise CheckError(f"{where}: needs image or build")
        build = svc.get("build")
        if isinstance(build, dict):
            ctx = (DEPLOY / build.get("context", ".")).resolve()
            if not ctx.is_dir() or not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
                raise CheckError(f"{where}: build context or Dockerfile missing")
        deps = svc.get("depends_on") or []
        for dep in deps:
            if dep not in services:
                raise CheckError(f"{where}: depends_on unknown service {dep}")
            cond = deps[dep].get("condition") if isinstance(deps, dict) else None
            if cond == "service_healthy" and not _has_healthcheck(services[dep]):
                raise CheckError(f"{where}: waits for {dep} healthy but {dep} has no healthcheck")
        for mount in svc.get("volumes") or []:
            source = str(mount).split(":")[0]
            if source.startswith((".", "/")):
                if not (DEPLOY / source).exists():
                    raise CheckError(f"{where}: bind mount source {source} does not exist")
            elif source not in volumes:
                raise CheckError(f"{where}: named volume {source} is not declared")
        env_files = svc.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            # deploy/.env is the operator's copy of .env.example; the example stands in for it here.
            target = ENV_EXAMPLE if env_file == ".env" else DEPLOY / env_file
            if not target.is_file():
                raise CheckError(f"{where}: env_file {env_file} missing")
        for port in svc.get("ports") or []:
            if not re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+:\d+(/tcp|/udp)?", str(port)):
                raise CheckError(f"{where}: port mapping {port!r} not understood")
    done.append(f"{len(services)} services: image/build, depends_on targets and health, volumes, env_file, ports")
    return done


def _has_healthcheck(svc: dict[str, Any]) -> bool:
    """In the service, or in the image when it is built from deploy/Dockerfile (which has a HEALTHCHECK)."""
    build = svc.get("build")
    built_here = isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"
    return "healthcheck" in svc or built_here


# --- Dockerfile -----------------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY of the first stage: what `pip install .` sees in /src."""
    copies = []
    froms = 0
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            froms += 1
            if froms > 1:
                break
        elif word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            copies.append((args[:-1], args[-1]))
    if not copies:
        raise CheckError("Dockerfile: no COPY in the build stage")
    return copies


def dockerignore_allows(source: str) -> bool:
    """True when deploy/Dockerfile.dockerignore (an allow-list: `*` then `!path`) lets `source` into the context."""
    allowed = False
    top = source.rstrip("/").split("/")[0]
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        if fnmatch.fnmatch(top, pattern.rstrip("/")):
            allowed = negate
    return allowed


def copy_build_context(dest: Path) -> list[str]:
    """Copy what the build stage's COPY lines copy (the same sources, filtered like the build context)."""
    done = []
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, target in build_stage_copies():
        for source in sources:
            src = REPO / source
            if not src.exists():
                raise CheckError(f"Dockerfile COPY {source}: not in the repository")
            if not dockerignore_allows(source):
                raise CheckError(f"Dockerfile COPY {source}: excluded by Dockerfile.dockerignore")
            # Docker's COPY: a directory's contents go into the target; files go into a target ending in "/".
            to = dest / target
            if src.is_dir():
                shutil.copytree(src, to, ignore=ignore, dirs_exist_ok=True)
            elif target.endswith("/"):
                to.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, to / src.name)
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, to)
            done.append(source)
    return done


def healthcheck_cmd() -> list[str]:
    for word, rest in dockerfile_instructions():
        if word == "HEALTHCHECK":
            _, _, cmd = rest.partition("CMD ")
            args = json.loads(cmd)
            if not isinstance(args, list):
                raise CheckError("HEALTHCHECK CMD must use the exec (JSON) form")
            return [str(a) for a in args]
    raise CheckError("Dockerfile: no HEALTHCHECK")


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["yaml"]:
            for line in check_yaml():
                print(f"  parsed {line}")
        elif argv[:1] == ["compose-lint"]:
            for line in compose_lint():
                print(f"  {line}")
        elif argv[:1] == ["copy-build-context"] and len(argv) == 2:
            for source in copy_build_context(Path(argv[1])):
                print(f"  COPY {source}")
        elif argv[:1] == ["healthcheck-cmd"]:
            print("\n".join(healthcheck_cmd()))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckError as exc:
        print(f"  error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
