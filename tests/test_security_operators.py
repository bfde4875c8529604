"""Operator start-up and CLI (docs/security.md, "Operators"): ``ocpi-hub serve`` and the admin commands as an
operator runs them, in subprocesses, reading exit codes, stderr and the files ``serve`` leaves behind."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REDIS_URL, cleanup_prefix, free_port, real_redis_available
from tests.test_cli import OCPI_HUB, Result, assert_clear_failure, clean_env, cli, serve
from tests.test_processes import HubProcess, admin

STRONG = "operator-token-Xk3Lq8Rt5Vw2Yz7Nb4"


def run_serve(tmp_path: Path, *args: str, timeout: float = 30, **env: str) -> Result:
    """``ocpi-hub serve`` expected to stop on its own (a start-up error)."""
    values = {"HUB_SQLITE_PATH": str(tmp_path / "data" / "hub.sqlite3"), "HUB_CONFIG_DIR": str(tmp_path / "cfg"),
              "HUB_PORT": str(free_port()), **env}
    done = subprocess.run([OCPI_HUB, "serve", *args], env=clean_env(**values), capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert_clear_failure(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(("env", "fragments"), [
    ({"HUB_PORT": "abc"}, ("HUB_PORT", "abc")),
    ({"HUB_PORT": "70000"}, ("HUB_PORT",)),
    ({"HUB_LOG_LEVEL": "LOUD"}, ("HUB_LOG_LEVEL", "LOUD", "DEBUG")),
    ({"HUB_KEY_PREFIX": "a}b"}, ("HUB_KEY_PREFIX", "hash tag")),
    ({"HUB_KEY_PREFIX": "{x"}, ("HUB_KEY_PREFIX",)),
    ({"HUB_PUBLIC_URL": "not a url"}, ("HUB_PUBLIC_URL",)),
    ({"HUB_MAX_CONNECTIONS": "0"}, ("HUB_MAX_CONNECTIONS",)),
    ({"HUB_ENV": "prod"}, ("HUB_ENV", "development")),
    ({"HUB_SQLITE_PATH": "/proc/no-such-dir/hub.sqlite3"}, ("data folder", "/proc/no-such-dir")),
])
def test_every_bad_setting_is_one_clear_line_and_a_non_zero_exit(tmp_path: Path, env: dict[str, str],
                                                                 fragments: tuple[str, ...]) -> None:
    result = run_serve(tmp_path, timeout=30, **env)  # a hang (the old 'a}b' behaviour) fails by timeout
    assert_one_line_error(result, *fragments)
    if "HUB_PORT" not in env and "HUB_SQLITE_PATH" not in env:
        # The admin commands read the same settings and fail the same way.
        assert_one_line_error(cli("queues", url="http://127.0.0.1:9", **env), *fragments)


def test_an_unwritable_data_folder_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o500)
    try:
        if _can_write(data):
            pytest.skip("this user can write into a read-only folder (root)")
        assert_one_line_error(run_serve(tmp_path, HUB_SQLITE_PATH=str(data / "hub.sqlite3")), "not writable")
    finally:
        data.chmod(0o700)


def _can_write(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.mark.parametrize("token", ["change-me", "admin", "short-token-1", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                   "please-change-me-before-production-2024"])
def test_weak_admin_tokens_are_refused_outside_development(tmp_path: Path, token: str) -> None:
    result = run_serve(tmp_path, HUB_ADMIN_TOKEN=token)
    assert_one_line_error(result, "HUB_ADMIN_TOKEN", "weak")
    assert token not in result.stderr  # the refusal does not echo the secret


def test_a_weak_admin_token_is_accepted_in_development(tmp_path: Path) -> None:
    served = serve(tmp_path, admin_token="change-me", HUB_ENV="development")
    try:
        assert "HUB_ENV=development" in served.output()
        assert cli("platforms", "list", url=served.url, token="change-me").json() == []
    finally:
        served.stop()


def test_the_generated_token_is_kept_across_restarts_and_a_failed_second_serve_leaves_it_alone(
        tmp_path: Path) -> None:
    first = serve(tmp_path, admin_token=None)
    token_file = tmp_path / "admin-token"
    try:
        token = token_file.read_text().strip()
        assert token in first.output()
        # A second serve on the same port cannot bind: it fails with one line and writes no token.
        token_file.write_text(token + "\n")
        before = token_file.stat().st_mtime_ns
        time.sleep(0.01)
        port = first.url.rsplit(":", 1)[1]
        second = run_serve(tmp_path, HUB_PORT=port, HUB_SQLITE_PATH=str(first.sqlite_path),
                           HUB_CONFIG_DIR=str(tmp_path / "config"))
        assert_one_line_error(second, "cannot listen", port)
        assert token_file.stat().st_mtime_ns == before and token_file.read_text().strip() == token
        assert cli("platforms", "list", url=first.url, token=token).json() == []
    finally:
        first.stop()
    again = serve(tmp_path, admin_token=None)
    try:
        assert token_file.read_text().strip() == token
        assert "kept in" in again.output()
        assert cli("platforms", "list", url=again.url, token=token).json() == []
    finally:
        again.stop()


def test_the_cli_finds_the_generated_token_from_any_folder(tmp_path: Path) -> None:
    served = serve(tmp_path, admin_token=None)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    try:
        result = cli("platforms", "list", url=served.url, token=None, cwd=elsewhere,
                     HUB_CONFIG_DIR=str(tmp_path / "config"))
        assert result.json() == []
        # HUB_URL is not even needed: it follows HUB_PORT, like the advertised URL.
        port = served.url.rsplit(":", 1)[1]
        result = cli("platforms", "list", url="", token=None, cwd=elsewhere, HUB_PORT=port,
                     HUB_CONFIG_DIR=str(tmp_path / "config"))
        assert result.json() == []
    finally:
        served.stop()


def test_the_banner_comes_once_the_hub_answers_and_the_advertised_url_follows_the_port(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(HUB_SQLITE_PATH=str(tmp_path / "hub.sqlite3"), HUB_ADMIN_TOKEN=STRONG,
                    HUB_CONFIG_DIR=str(tmp_path / "cfg"))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([OCPI_HUB, "serve", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while "listening" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        # The moment the banner is out, the hub answers: it came after the bind and after Redis and the store.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/ocpi/versions", headers={"Authorization": "Token x"}), timeout=5) as resp:
            pass
    except urllib.error.HTTPError as exc:
        assert exc.code == 401  # versions needs a token; the point is that it answered
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    out = log.read_text()
    assert f"public URL http://127.0.0.1:{port}" in out and "8080" not in out, out


def test_the_advertised_url_is_the_public_url_when_set(tmp_path: Path) -> None:
    served = serve(tmp_path, admin_token=STRONG)  # serve() sets HUB_PUBLIC_URL to the URL it reaches
    try:
        created = cli("platforms", "add", "--name", "Eta", "--role", "NL:ETA:CPO", url=served.url,
                      token=STRONG).json()
        assert created["versions_url"] == served.url + "/ocpi/versions"
    finally:
        served.stop()


def _undocumented(help_text: str) -> list[str]:
    """Options and subcommands in an argparse ``--help`` without a description of their own."""
    lines = help_text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        entry = re.match(r"^  (  )?(-\S.*|[a-z][a-z-]+)$|^  (  )?(-\S.*?|[a-z][a-z-]+)\s{2,}\S", line)
        if not entry or line.strip().startswith("{"):
            continue
        inline = re.search(r"\S\s{2,}\S", line.strip())
        below = i + 1 < len(lines) and re.match(r"^\s{10,}\S", lines[i + 1]) is not None
        if not inline and not below:
            missing.append(line.strip())
    return missing


def test_every_command_and_filter_has_help() -> None:
    commands = [[], ["serve"], ["platforms"], ["platforms", "add"], ["platforms", "list"], ["platforms", "show"],
                ["platforms", "suspend"], ["platforms", "resume"], ["platforms", "remove"], ["platforms", "rotate"],
                ["platforms", "connect"], ["queues"], ["audit"], ["dead-letters"], ["dead-letters", "list"],
                ["dead-letters", "replay"], ["dead-letters", "delete"]]
    for command in commands:
        done = subprocess.run([OCPI_HUB, *command, "--help"], capture_output=True, text=True, timeout=30,
                              env={**clean_env(), "COLUMNS": "200"})
        assert done.returncode == 0, done.stderr
        assert not _undocumented(done.stdout), (command, _undocumented(done.stdout), done.stdout)


@pytest.mark.parametrize(("args", "valid"), [
    (("audit", "--outcome", "bogus"), "forwarded"),
    (("audit", "--module", "bogus"), "locations"),
    (("platforms", "list", "--status", "X"), "CONNECTED"),
])
def test_unknown_filter_values_are_errors_listing_the_valid_ones(args: tuple[str, ...], valid: str) -> None:
    result = cli(*args, url="http://127.0.0.1:9")
    assert_clear_failure(result, "invalid choice", valid)


def test_the_admin_api_refuses_unknown_filter_values_with_400(tmp_path: Path) -> None:
    served = serve(tmp_path, admin_token=STRONG)
    try:
        for path, valid in (("/admin/audit?outcome=bogus", "forwarded"), ("/admin/audit?module=bogus", "admin"),
                            ("/admin/platforms?status=X", "SUSPENDED"), ("/admin/audit?platform=nope", "platform"),
                            ("/admin/dead-letters?receiver=nope", "platform")):
            request = urllib.request.Request(served.url + path, headers={"Authorization": f"Bearer {STRONG}"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request, timeout=10)
            assert err.value.code == 400, path
            assert valid in json.loads(err.value.read())["error"], path
        created = cli("platforms", "add", "--name", "Theta", "--role", "NL:THE:CPO", url=served.url,
                      token=STRONG).json()
        assert [p["id"] for p in cli("platforms", "list", "--status", "PLANNED", url=served.url,
                                     token=STRONG).json()] == [created["id"]]
        assert cli("platforms", "list", "--status", "CONNECTED", url=served.url, token=STRONG).json() == []
    finally:
        served.stop()


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(tmp_path, HUB_PORT=str(port), HUB_ADMIN_TOKEN=STRONG)
    assert_one_line_error(result, "cannot listen", str(port))
    assert not (tmp_path / "data" / "admin-token").exists()


async def test_with_workers_the_banner_and_token_come_once_every_worker_listens(tmp_path: Path) -> None:
    if not real_redis_available():
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = "test-ops-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, workers=2, HUB_REDIS_URL=REDIS_URL, HUB_KEY_PREFIX=prefix)  # no HUB_ADMIN_TOKEN
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            deadline = time.monotonic() + 30
            while "listening" not in hub.output():
                assert time.monotonic() < deadline, hub.errors()
                await asyncio.sleep(0.05)
            token = (tmp_path / "data" / "admin-token").read_text().strip()
            assert token in hub.output() and "workers: 2" in hub.output()
            for _ in range(4):  # whichever worker answers knows the token
                status, body = await admin(session, hub.url, "GET", "/admin/platforms", token=token)
                assert status == 200 and body == []
    finally:
        hub.stop()
        cleanup_prefix(prefix)
