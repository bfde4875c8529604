"""Drive one load scenario with wrk (preferred) or the Python fallback, and parse what it measured.

wrk runs with a Lua script (``ocpi.lua``) that sets the OCPI headers, varies the object id, checks every
answer and prints one JSON line; the fallback (``pyload.py``) prints the same line, so both parse alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from common import HERE, python_argv

LUA = HERE / "ocpi.lua"


@dataclass(frozen=True)
class Load:
    """What one scenario sends: method and path base, the caller's token and the routing parties."""

    method: str
    base_path: str
    auth: str
    from_: tuple[str, str]
    to: tuple[str, str]
    owner: tuple[str, str] = ("", "")  # country_code/party_id in a PUT body (the path owner)
    label: str = ""  # names a variant of a method (a PUT translated between versions); default: the method
    # Optional file of routes (caller's token, FROM, TO; one a line, tab-separated) the requests cycle through
    # instead of ``auth``/``from_``/``to`` (scale.py: many callers and receivers).
    routes_file: str = ""

    @property
    def name(self) -> str:
        return self.label or self.method

    def env(self) -> dict[str, str]:
        return {
            "BENCH_METHOD": self.method, "BENCH_BASE_PATH": self.base_path, "BENCH_AUTH": self.auth,
            "BENCH_FROM_CC": self.from_[0], "BENCH_FROM_PID": self.from_[1],
            "BENCH_TO_CC": self.to[0], "BENCH_TO_PID": self.to[1],
            "BENCH_OWNER_CC": self.owner[0], "BENCH_OWNER_PID": self.owner[1],
            "BENCH_ROUTES_FILE": self.routes_file,
        }


@dataclass
class Result:
    """One measured run; latencies in milliseconds."""

    requests: int
    duration_s: float
    non2xx: int
    bad_ocpi: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    loadgen_cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.bad_ocpi + sum(self.socket_errors.values())

    @property
    def error_rate(self) -> float:
        return self.errors / max(self.requests, 1)


def ensure_wrk() -> str | None:
    """Path of wrk; installs the Debian package when missing (apt-get update only if the first try fails)."""
    found = shutil.which("wrk")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    for steps in ([install], [["apt-get", "update", "-q"], install]):
        print(f"wrk is missing: running {' && '.join(' '.join(s) for s in steps)}", flush=True)
        try:
            if all(subprocess.run(s, env=env, capture_output=True, timeout=300).returncode == 0 for s in steps):
                break
        except (OSError, subprocess.TimeoutExpired):
            continue
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    try:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0] if text else "unknown"


def parse(output: str) -> Result:
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"load generator printed no BENCH_JSON line:\n{output[-2000:]}")
    doc = json.loads(line.removeprefix("BENCH_JSON "))
    return Result(
        requests=int(doc["requests"]), duration_s=doc["duration_us"] / 1e6, non2xx=int(doc["non2xx"]),
        bad_ocpi=int(doc["bad_ocpi"]), socket_errors={k: int(v) for k, v in doc["socket_errors"].items()},
        latency_ms={k: round(v / 1000, 3) for k, v in doc["latency_us"].items()},
    )


async def run(load: Load, url: str, *, wrk: str | None, connections: int, threads: int, duration: float,
              request_ids: str = "sequential") -> Result:
    """One bounded run against ``url`` (scheme://host:port); the path comes from ``load``.

    ``request_ids``: X-Request-ID and X-Correlation-ID are "sequential" (this run's token and a counter) or
    "random" (a UUID each, as platforms send them). The hub audits both ids; on the SQLite store random ones cost
    more (bench/README.md, ``--request-ids``)."""
    if wrk:
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
                "-s", str(LUA), url]
    else:
        argv = python_argv("pyload.py", url, str(connections), str(duration))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # A fresh BENCH_RUN per run: request ids never repeat, so no run is taken for a retry of an earlier one
    env = {**os.environ, **load.env(), "BENCH_RUN": os.urandom(4).hex(), "BENCH_IDS": request_ids}
    proc = await asyncio.create_subprocess_exec(*argv, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=duration + 30)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse(out.decode(errors="replace"))
    result.loadgen_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result
