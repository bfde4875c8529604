"""The ``ocpi-hub`` console script as an operator uses it: ``serve`` in a subprocess, then the admin commands
against it, reading their JSON output, exit codes and error messages (docs/architecture.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import cpo, free_port
from tests.partners import ocpi_token

OCPI_HUB = shutil.which("ocpi-hub", path=str(Path(sys.executable).parent)) or "ocpi-hub"
ADMIN_TOKEN = "cli-test-admin-token-5Hw8Jt2Nq6Yb"  # strong enough for `serve`


def clean_env(**values: str) -> dict[str, str]:
    """The test runner's environment without any HUB_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(values)
    return env


@dataclass
class Served:
    """A hub started by ``ocpi-hub serve`` in its own process."""

    proc: subprocess.Popen[bytes]
    url: str
    sqlite_path: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def serve(data_dir: Path, admin_token: str | None = ADMIN_TOKEN, **more_env: str) -> Served:
    """Start ``ocpi-hub serve`` on a free port and wait until ``/healthz`` answers; ``more_env``: HUB_* settings."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sqlite_path = data_dir / "hub.sqlite3"
    env = clean_env(HUB_PORT=str(port), HUB_PUBLIC_URL=url, HUB_SQLITE_PATH=str(sqlite_path),
                    HUB_ALLOW_PRIVATE_URLS="true",  # the fake partners run on 127.0.0.1
                    HUB_CONFIG_DIR=str(data_dir / "config"), **more_env)
    if admin_token is not None:
        env["HUB_ADMIN_TOKEN"] = admin_token
    log = data_dir / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([OCPI_HUB, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir)
    served = Served(proc, url, sqlite_path, log)
    deadline = time.monotonic() + 20
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ocpi-hub serve exited with {proc.returncode}:\n{served.output()}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return served
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"ocpi-hub serve did not become healthy:\n{served.output()}")
            time.sleep(0.05)
    except BaseException:
        served.stop()
        raise


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.stderr}"
        return json.loads(self.stdout)


def cli(*args: str, url: str, token: str | None = ADMIN_TOKEN, cwd: Path | None = None, **env: str) -> Result:
    """Run one ``ocpi-hub`` admin command the way an operator would."""
    values = {"HUB_URL": url, **env}
    if token is not None:
        values["HUB_ADMIN_TOKEN"] = token
    done = subprocess.run([OCPI_HUB, *args], env=clean_env(**values), capture_output=True, text=True, timeout=30,
                          cwd=cwd)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_clear_failure(result: Result, *fragments: str) -> None:
    """Non-zero exit, a short message on stderr naming the problem, nothing on stdout, no traceback."""
    assert result.code != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result
    for fragment in fragments:
        assert fragment.lower() in result.stderr.lower(), result.stderr


@pytest.fixture(scope="module")
def hub_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve(tmp_path_factory.mktemp("served"))
    try:
        yield served
    finally:
        served.stop()


def add(hub: Served, name: str, *roles: str) -> dict[str, Any]:
    args = ["platforms", "add", "--name", name]
    for role in roles:
        args += ["--role", role]
    return dict(cli(*args, url=hub.url).json())


# -- happy paths ---------------------------------------------------------------------------------------------------

def test_platforms_add_prints_the_new_platform_as_json(hub_process: Served) -> None:
    body = add(hub_process, "Alpha CPO", "NL:CPA:CPO", "nl:ema:emsp")
    assert body["id"] and body["token_a"]
    assert body["versions_url"] == f"{hub_process.url}/ocpi/versions"
    assert body["status"] == "PLANNED" and body["name"] == "Alpha CPO"
    assert [(p["country_code"], p["party_id"], p["role"]) for p in body["parties"]] == [
        ("NL", "CPA", "CPO"), ("NL", "EMA", "EMSP")]
    with urllib.request.urlopen(urllib.request.Request(
            body["versions_url"], headers={"Authorization": ocpi_token(body["token_a"])})) as resp:
        assert resp.status == 200, "the printed Token A opens the hub"


def test_list_show_suspend_resume_remove(hub_process: Served) -> None:
    url = hub_process.url
    platform = add(hub_process, "Gamma CPO", "BE:GAM:CPO")
    pid = platform["id"]
    listed = cli("platforms", "list", url=url).json()
    assert pid in [p["id"] for p in listed]
    assert all("token_a" not in p for p in listed)
    shown = cli("platforms", "show", pid, url=url).json()
    assert shown["id"] == pid and shown["status"] == "PLANNED" and "token_a" not in shown
    assert cli("platforms", "suspend", pid, url=url).json()["status"] == "SUSPENDED"
    resumed = cli("platforms", "resume", pid, url=url).json()
    assert resumed["status"] == "PLANNED" and resumed["token_a"] != platform["token_a"]
    removed = cli("platforms", "remove", pid, url=url).json()
    assert removed["status"] == "REMOVED"
    assert cli("platforms", "show", pid, url=url).json()["status"] == "REMOVED"
    again = add(hub_process, "Gamma CPO again", "BE:GAM:CPO")
    assert again["id"] != pid, "a removed platform frees its parties"


def test_queues_prints_a_json_list(hub_process: Served) -> None:
    queues = cli("queues", url=hub_process.url).json()
    assert isinstance(queues, list)


async def test_token_a_from_the_cli_registers_a_partner(hub_process: Served) -> None:
    partner = cpo(name="Delta CPO", pid="DEL")
    platform = add(hub_process, partner.name, partner.party.role_spec)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await partner.start()
        try:
            await partner.register(session, platform["versions_url"], platform["token_a"])
        finally:
            await partner.stop()
    shown = cli("platforms", "show", platform["id"], url=hub_process.url).json()
    assert shown["status"] == "CONNECTED" and shown["registered"]
    assert shown["partner_versions_url"] == partner.versions_url


# -- failures --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", ["show", "suspend", "resume", "remove"])
def test_unknown_platform_id_fails_clearly(hub_process: Served, action: str) -> None:
    assert_clear_failure(cli("platforms", action, "no-such-id", url=hub_process.url), "404", "no-such-id")


def test_allowed_hosts_names_the_platform_as_one_path_segment(hub_process: Served) -> None:
    # an id holding '/' or '?' must reach the admin API as that id, not as another path or a query
    result = cli("platforms", "allowed-hosts", "no/such?id", "partner.example", url=hub_process.url)
    assert_clear_failure(result, "404", "no/such?id")


@pytest.mark.parametrize(("role", "fragments"), [
    ("NL-CPA-CPO", ("CC:PID:ROLE",)),
    ("NL:CPA", ("CC:PID:ROLE",)),
    ("NL:CPA:KING", ("400", "role")),
    ("NL:CPA:HUB", ("400", "role")),
    ("NLD:CPA:CPO", ("400", "country_code")),
    ("NL:CPAX:CPO", ("400", "party_id")),
])
def test_bad_role_fails_clearly(hub_process: Served, role: str, fragments: tuple[str, ...]) -> None:
    result = cli("platforms", "add", "--name", "Broken", "--role", role, url=hub_process.url)
    assert_clear_failure(result, *fragments)


def test_missing_arguments_fail_with_usage(hub_process: Served) -> None:
    assert_clear_failure(cli("platforms", "add", "--role", "NL:CPA:CPO", url=hub_process.url), "--name")
    assert_clear_failure(cli("platforms", "show", url=hub_process.url), "id")


def test_a_pair_reserved_by_another_platform_fails_with_409(hub_process: Served) -> None:
    add(hub_process, "Epsilon CPO", "IT:EPS:CPO")
    result = cli("platforms", "add", "--name", "Copycat", "--role", "IT:EPS:EMSP", url=hub_process.url)
    assert_clear_failure(result, "409", "IT:EPS")


def test_wrong_admin_token_fails_with_401(hub_process: Served) -> None:
    assert_clear_failure(cli("platforms", "list", url=hub_process.url, token="wrong"), "401", "HUB_ADMIN_TOKEN")


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}", "not-a-url", "http://[::1"])
def test_hub_not_running_or_bad_url_fails_clearly(url: str) -> None:
    url = url.format(port=free_port())
    result = cli("platforms", "list", url=url)
    assert_clear_failure(result, url)


def test_without_any_admin_token_the_cli_says_where_to_get_one(tmp_path: Path) -> None:
    result = cli("platforms", "list", url=f"http://127.0.0.1:{free_port()}", token=None,
                 HUB_SQLITE_PATH=str(tmp_path / "hub.sqlite3"))
    assert_clear_failure(result, "HUB_ADMIN_TOKEN")


def test_help_names_every_ocpi_version_the_hub_speaks() -> None:
    done = subprocess.run([OCPI_HUB, "--help"], env=clean_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for version in ("2.1.1", "2.2.1", "2.3.0"):
        assert version in done.stdout, done.stdout


def test_output_into_a_pipe_closed_early_ends_without_a_traceback(hub_process: Served) -> None:
    """`ocpi-hub audit | head`: the reader is gone before the JSON is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([OCPI_HUB, "platforms", "list"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env=clean_env(HUB_URL=hub_process.url, HUB_ADMIN_TOKEN=ADMIN_TOKEN), timeout=30)
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


# -- the generated admin token ---------------------------------------------------------------------------------------

def test_serve_generates_an_admin_token_that_the_cli_finds(tmp_path: Path) -> None:
    served = serve(tmp_path, admin_token=None)
    try:
        banner = served.output()
        token_file = tmp_path / "admin-token"
        token = token_file.read_text().strip()
        assert token and token in banner, banner
        assert token_file.stat().st_mode & 0o777 == 0o600, "only the owner may read the admin token"
        db = {"HUB_SQLITE_PATH": str(served.sqlite_path)}
        platform = cli("platforms", "add", "--name", "Zeta", "--role", "ES:ZET:CPO", url=served.url, token=None,
                       **db).json()
        assert platform["status"] == "PLANNED"
        assert_clear_failure(cli("platforms", "list", url=served.url, token="guess"), "401")
        request = urllib.request.Request(served.url + "/admin/platforms", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as resp:
            assert [p["id"] for p in json.loads(resp.read())] == [platform["id"]]
    finally:
        served.stop()
    # A restart keeps the token (the CLI is not locked out), and the platform survives in the SQLite store.
    served = serve(tmp_path, admin_token=None)
    try:
        assert (tmp_path / "admin-token").read_text().strip() == token
        shown = cli("platforms", "show", platform["id"], url=served.url, token=None,
                    HUB_SQLITE_PATH=str(served.sqlite_path)).json()
        assert shown["name"] == "Zeta" and shown["status"] == "PLANNED"
    finally:
        served.stop()
