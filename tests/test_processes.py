"""``ocpi-hub serve`` as a real subprocess: restart after kill -9, several workers on one port, start banner.

The hub runs as the installed console script, in its own session (process group), with its SQLite file in the
test's tmp_path; FakePartners run in the test's event loop. Every test kills what it started, in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.registry import PlatformRegistry
from hub.store.sqlite import SqliteStore
from routing.platform import ConnectionStatus, Platform
from routing.platform import Party as PlatformParty
from tests.conftest import ADMIN_TOKEN, REDIS_URL, cleanup_prefix, cpo, emsp, free_port, real_redis_available
from tests.partners import FakePartner, ocpi_token

OCPI_HUB = str(Path(sys.executable).with_name("ocpi-hub"))
if not Path(OCPI_HUB).exists():  # pragma: no cover - running outside the venv
    OCPI_HUB = shutil.which("ocpi-hub") or "ocpi-hub"

START_TIMEOUT = 30.0
LOCATION = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "last_updated": "2024-01-01T00:00:00Z"}

needs_redis = pytest.mark.skipif(not real_redis_available(), reason="no Redis at 127.0.0.1:6379")


# -- a hub subprocess --------------------------------------------------------------------------------------
class HubProcess:
    """``ocpi-hub serve`` in its own process group; output goes to files in tmp_path (no pipe can fill up)."""

    def __init__(self, tmp_path: Path, *, port: int | None = None, workers: int = 1, **env: str) -> None:
        self.dir = tmp_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        self.env = {
            **base,
            "HUB_HOST": "127.0.0.1",
            "HUB_PORT": str(self.port),
            "HUB_PUBLIC_URL": self.url,
            "HUB_SQLITE_PATH": str(tmp_path / "data" / "hub.sqlite3"),
            "HUB_FORWARD_TIMEOUT": "5",
            "HUB_LOG_LEVEL": "WARNING",
            "HUB_ALLOW_PRIVATE_URLS": "true",  # the fake partners run on 127.0.0.1
            "HUB_CONFIG_DIR": str(tmp_path / "config"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def stdout_path(self) -> Path:
        return self.dir / f"hub-{self.runs}.out"

    @property
    def stderr_path(self) -> Path:
        return self.dir / f"hub-{self.runs}.err"

    def start(self) -> None:
        self.runs += 1
        args = [OCPI_HUB, "serve"] + (["--workers", str(self.workers)] if self.workers != 1 else [])
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, env=self.env, cwd=self.dir, stdout=out, stderr=err,
                                         start_new_session=True)

    def output(self) -> str:
        return self.stdout_path.read_text() if self.stdout_path.exists() else ""

    def errors(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"hub exited with {self.proc.returncode}:\n{self.output()}\n{self.errors()[-3000:]}")
            try:
                async with session.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        pytest.fail(f"hub did not answer /healthz within {START_TIMEOUT}s:\n{self.errors()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (supervisor and workers) and reap the supervisor."""
        if self.proc is None:
            return
        with _suppress_lookup():
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Teardown: nothing of this hub may survive the test."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        self.kill(signal.SIGKILL)
        with _suppress_lookup():
            os.killpg(pgid, signal.SIGKILL)  # workers are in the group too, even when the supervisor is gone
        self.proc = None


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, *_: Any) -> bool:
        return typ is not None and issubclass(typ, ProcessLookupError | PermissionError)


# -- helpers -----------------------------------------------------------------------------------------------
async def admin(session: aiohttp.ClientSession, url: str, method: str, path: str, body: Any = None,
                token: str = ADMIN_TOKEN) -> tuple[int, Any]:
    async with session.request(method, url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def onboard_and_register(session: aiohttp.ClientSession, url: str, partner: FakePartner) -> dict[str, Any]:
    status, platform = await admin(session, url, "POST", "/admin/platforms", {
        "name": partner.name,
        "roles": [{"country_code": p.country_code, "party_id": p.party_id, "role": p.role} for p in partner.parties],
    })
    assert status == 201, platform
    await partner.register(session, platform["versions_url"], platform["token_a"])
    return dict(platform)


async def ocpi_get(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with session.get(url, headers={"Authorization": ocpi_token(token)}) as resp:
        return resp.status, await resp.json(content_type=None)


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_sockets(port: int, states: Iterable[str]) -> set[str]:
    """Inodes of TCP sockets whose local port is ``port``, in the given /proc/net/tcp states (0A LISTEN, 01 EST.)."""
    wanted, inodes = set(states), set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] in wanted:
                inodes.add(cols[9])
    return inodes


async def hub_workers(hub: HubProcess) -> list[int]:
    """The supervisor's children that listen on the hub port (not multiprocessing's resource tracker)."""
    assert hub.proc is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        listening = tcp_sockets(hub.port, {"0A"})
        workers = [pid for pid in children_of(hub.proc.pid) if socket_inodes(pid) & listening]
        if len(workers) == hub.workers:
            return sorted(workers)
        await asyncio.sleep(0.1)
    pytest.fail(f"expected {hub.workers} listening workers:\n{hub.errors()[-3000:]}")


async def wait_gone(pids: Iterable[int], within: float = 15.0) -> list[int]:
    deadline = time.monotonic() + within
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if alive(pid)]
        await asyncio.sleep(0.1)
    return left


# -- restart -----------------------------------------------------------------------------------------------
async def test_registrations_survive_kill_9_and_restart_on_the_embedded_default(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, HUB_ADMIN_TOKEN=ADMIN_TOKEN)  # no HUB_REDIS_URL: embedded fakeredis + SQLite
    alpha, beta = cpo(), emsp()
    await alpha.start()
    await beta.start()
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            assert "admin token: from HUB_ADMIN_TOKEN" in hub.output()
            platforms = {p.name: await onboard_and_register(session, hub.url, p) for p in (alpha, beta)}
            status, _, body = await alpha.call(session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                               to=beta.party, json=LOCATION)
            assert status == 200, body
            assert len(beta.received) == 1

        hub.kill(signal.SIGKILL)
        assert hub.proc is not None and hub.proc.returncode == -signal.SIGKILL
        hub.start()  # same port, same SQLite file

        async with aiohttp.ClientSession() as session:
            await hub.wait_ready(session)
            for partner in (alpha, beta):
                assert partner.token_c is not None
                status, body = await ocpi_get(session, hub.url + "/ocpi/2.2.1/credentials", partner.token_c)
                assert status == 200, body  # Token C still opens the hub
                assert body["data"]["roles"][0]["role"] == "HUB"
                token_a = platforms[partner.name]["token_a"]
                for path in ("/ocpi/versions", "/ocpi/2.2.1/credentials"):
                    status, body = await ocpi_get(session, hub.url + path, token_a)
                    assert status == 401, body  # Token A died with the registration, and stays dead

            status, _, body = await alpha.call(session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC2",
                                               to=beta.party, json={**LOCATION, "id": "LOC2"})
            assert status == 200, body
            assert body["status_code"] == 1000
            assert [r.path for r in beta.received][-1] == "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC2"
            assert beta.received[-1].headers["Authorization"] == ocpi_token(beta.token_b)  # outbound token kept

            status, listed = await admin(session, hub.url, "GET", "/admin/platforms")
            assert status == 200, listed
            assert {p["name"]: p["status"] for p in listed} == {alpha.name: "CONNECTED", beta.name: "CONNECTED"}
            assert {p["id"] for p in listed} == {p["id"] for p in platforms.values()}
    finally:
        hub.stop()
        await alpha.stop()
        await beta.stop()


# -- several workers ---------------------------------------------------------------------------------------
@needs_redis
async def test_two_workers_serve_one_port_share_platforms_and_merge_metrics(tmp_path: Path) -> None:
    prefix = "test-proc-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, workers=2, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_REDIS_URL=REDIS_URL,
                     HUB_KEY_PREFIX=prefix)
    alpha = cpo()
    emsps = [emsp(name=f"eMSP {i}", pid=f"EM{i}") for i in range(3)]
    partners = [alpha, *emsps]
    for p in partners:
        await p.start()
    sessions: list[aiohttp.ClientSession] = []
    sent = 0  # OCPI requests sent to the hub, all of them
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            workers = await hub_workers(hub)
            await onboard_and_register(session, hub.url, alpha)
            sent += 3  # versions, version details, credentials POST

            # Each round: a new eMSP is onboarded and registered (through whichever worker), then at once 40
            # fresh connections - spread over both workers by the kernel - route to it. None may fail.
            connections, per_connection = 40, 5
            for receiver in emsps:
                await onboard_and_register(session, hub.url, receiver)
                sent += 3
                sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                            for _ in range(connections)]

                async def burst(s: aiohttp.ClientSession, n: int, to: FakePartner) -> list[tuple[int, Any]]:
                    results = []
                    for i in range(per_connection):
                        loc = {**LOCATION, "id": f"L{n}-{i}"}
                        status, _, body = await alpha.call(s, "PUT", "locations", "RECEIVER", f"NL/CPA/L{n}-{i}",
                                                           to=to.party, json=loc)
                        results.append((status, body))
                    return results

                results = await asyncio.gather(*(burst(s, n, receiver) for n, s in enumerate(sessions)))
                sent += connections * per_connection
                failures = [r for batch in results for r in batch if r[0] != 200 or r[1].get("status_code") != 1000]
                assert not failures, failures[:3]
                assert len(receiver.received) == connections * per_connection

                # Both workers hold some of the still-open client connections, so both served requests.
                established = tcp_sockets(hub.port, {"01"})
                held = {pid: len(socket_inodes(pid) & established) for pid in workers}
                assert all(n > 0 for n in held.values()), held
                assert sum(held.values()) >= connections, held  # + the operator session's own
                for s in sessions:
                    await s.close()
                sessions = []

            # A scrape of the shared port counts every request, whichever worker handled it, once the other
            # worker added its latest counts (hub.metrics.REQUEST_FLUSH_EVERY).
            deadline = time.monotonic() + 20
            while True:
                async with session.get(hub.url + "/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
                requests = metric_samples(text, "ocpi_hub_requests_total")
                if sum(v for _, v in requests) == sent or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
            assert sum(v for _, v in requests) == sent
            forwarded = [(labels, v) for labels, v in requests if labels["outcome"] == "forwarded"]
            assert forwarded == [({"module": "locations", "interface_role": "RECEIVER", "method": "PUT",
                                   "outcome": "forwarded"}, float(sent - 12))]
            durations = metric_samples(text, "ocpi_hub_request_duration_seconds_count")
            assert sum(v for _, v in durations) == sent
            # Per receiver (hub/receiver_metrics.py): each worker shares its figures every few seconds, so a
            # scrape shows every forward once the other worker's file caught up.
            forwards = sent - 12
            deadline = time.monotonic() + 20
            while True:
                async with session.get(hub.url + "/metrics") as resp:
                    text = await resp.text()
                answered = metric_samples(text, "ocpi_hub_receiver_duration_seconds_count")
                results = metric_samples(text, "ocpi_hub_receiver_results_total")
                if sum(v for _, v in answered) == forwards or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert sum(v for _, v in answered) == forwards, answered
            assert {labels["module"] for labels, _ in answered} == {"locations"}
            assert len(answered) == len(emsps), "one histogram per receiver platform"
            assert [(labels["result"], v) for labels, v in results if labels["result"] != "ok"] == []
            assert sum(v for _, v in results) == forwards

            # SIGTERM to the supervisor stops the workers gracefully: exit code 0, nothing left behind.
            assert hub.proc is not None
            hub.proc.send_signal(signal.SIGTERM)
            assert hub.proc.wait(timeout=40) == 0, hub.errors()[-3000:]
            assert await wait_gone(workers) == []
    finally:
        for s in sessions:
            await s.close()
        hub.stop()
        for p in partners:
            await p.stop()
        cleanup_prefix(prefix)


@needs_redis
async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    prefix = "test-proc-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, workers=2, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_REDIS_URL=REDIS_URL,
                     HUB_KEY_PREFIX=prefix)
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            workers = await hub_workers(hub)
            assert hub.proc is not None
            os.kill(hub.proc.pid, signal.SIGKILL)  # only the supervisor, not the group
            hub.proc.wait(timeout=10)
            assert await wait_gone(workers) == [], "workers kept serving after their supervisor died"
    finally:
        hub.stop()
        cleanup_prefix(prefix)


@needs_redis
async def test_a_dead_worker_stops_the_hub_with_an_error(tmp_path: Path) -> None:
    prefix = "test-proc-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, workers=2, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_REDIS_URL=REDIS_URL,
                     HUB_KEY_PREFIX=prefix)
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            first, second = await hub_workers(hub)
            os.kill(first, signal.SIGKILL)
            assert hub.proc is not None
            assert hub.proc.wait(timeout=40) != 0
            assert f"pid {first}" in hub.errors()
            assert await wait_gone([second]) == []
    finally:
        hub.stop()
        cleanup_prefix(prefix)


def test_workers_without_redis_exit_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, workers=2, HUB_ADMIN_TOKEN=ADMIN_TOKEN)
    done = subprocess.run([OCPI_HUB, "serve", "--workers", "2"], env=hub.env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "HUB_REDIS_URL" in done.stderr
    assert "--workers" in done.stderr
    assert "listening" not in done.stdout  # it never claimed to serve


# -- start banner ------------------------------------------------------------------------------------------
async def test_embedded_banner_shows_address_generated_admin_token_and_volatile_queues(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path)  # no HUB_ADMIN_TOKEN: one is generated, printed and saved
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            out = hub.output()
            assert f"listening on http://127.0.0.1:{hub.port}" in out
            match = re.search(r"admin token \(generated, saved to (?P<path>\S+)\): (?P<token>\S+)", out)
            assert match, out
            assert "NOT durable" in out and "fakeredis" in out, out
            token_file = tmp_path / "data" / "admin-token"
            assert Path(match["path"]) == token_file
            assert token_file.read_text().strip() == match["token"]
            assert token_file.stat().st_mode & 0o777 == 0o600

            status, body = await admin(session, hub.url, "GET", "/admin/platforms", token=match["token"])
            assert status == 200 and body == []
            status, _ = await admin(session, hub.url, "GET", "/admin/platforms", token="wrong")
            assert status == 401
    finally:
        hub.stop()


def _server_side_owner(hub_port: int, client_port: int, workers: list[int]) -> int | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if local_port == hub_port and remote_port == client_port and cols[3] == "01":
                for pid in workers:
                    if cols[9] in socket_inodes(pid):
                        return pid
    return None


async def pinned_sessions(hub: HubProcess, workers: list[int]) -> dict[int, aiohttp.ClientSession]:
    """One keep-alive session per worker, each holding a single connection that worker accepted."""
    pinned: dict[int, aiohttp.ClientSession] = {}
    spare: list[aiohttp.ClientSession] = []
    try:
        for _ in range(64):
            client_port = free_port()  # the client side's port names the connection in /proc/net/tcp
            s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, local_addr=("127.0.0.1", client_port)))
            async with s.get(hub.url + "/healthz") as resp:
                assert resp.status == 200
            owner = _server_side_owner(hub.port, client_port, workers)
            if owner is not None and owner not in pinned:
                pinned[owner] = s
            else:
                spare.append(s)
            if len(pinned) == len(workers):
                return pinned
        pytest.fail("could not reach every worker")
    finally:
        for s in spare:
            await s.close()


@needs_redis
async def test_a_platform_registered_through_one_worker_is_routable_at_once_through_the_other(tmp_path: Path) -> None:
    prefix = "test-proc-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, workers=2, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_REDIS_URL=REDIS_URL,
                     HUB_KEY_PREFIX=prefix)
    alpha = cpo()
    rounds = 10
    receivers = [emsp(name=f"eMSP {i}", pid=f"E{i:02d}") for i in range(rounds)]
    for p in (alpha, *receivers):
        await p.start()
    pinned: dict[int, aiohttp.ClientSession] = {}
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            workers = await hub_workers(hub)
            pinned = await pinned_sessions(hub, workers)
            await onboard_and_register(pinned[workers[0]], hub.url, alpha)
            for i, receiver in enumerate(receivers):
                here, there = (workers[0], workers[1]) if i % 2 else (workers[1], workers[0])
                await onboard_and_register(pinned[here], hub.url, receiver)  # every step on worker `here`
                status, _, body = await alpha.call(pinned[there], "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                                   to=receiver.party, json=LOCATION)
                assert status == 200, (i, body)
                assert len(receiver.received) == 1
    finally:
        for s in pinned.values():
            await s.close()
        hub.stop()
        for p in (alpha, *receivers):
            await p.stop()
        cleanup_prefix(prefix)


# -- the platform view every process routes from -------------------------------------------------------------
class _GatedStore(SqliteStore):
    """Holds the answers of the reads a full reload and a one-platform reload make until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.gate = asyncio.Event()
        self.gate.set()
        self.reading = asyncio.Event()

    async def platform_revisions(self) -> dict[str, int]:
        result = await super().platform_revisions()
        self.reading.set()
        await self.gate.wait()
        return result

    async def get_platforms(self, platform_ids: Sequence[str]) -> list[Platform]:
        result = await super().get_platforms(platform_ids)
        self.reading.set()
        await self.gate.wait()
        return result

    async def get_platform(self, platform_id: str) -> Platform | None:
        result = await super().get_platform(platform_id)
        self.reading.set()
        await self.gate.wait()
        return result


@pytest.mark.parametrize("read", ["full reload", "reload of one platform"])
async def test_a_slow_store_read_never_undoes_a_newer_change_in_the_view(read: str) -> None:
    store = _GatedStore()
    await store.open()
    try:
        registry = PlatformRegistry(store)
        await registry.save(Platform(id="p1", name="before", parties=[PlatformParty("NL", "CPA", "CPO")]))
        store.gate.clear()
        store.reading.clear()
        reader = asyncio.create_task(registry.load() if read == "full reload" else registry.reload("p1"))
        await store.reading.wait()  # the read has its (old) answer and is held
        await registry.save(Platform(id="p1", name="after", status=ConnectionStatus.SUSPENDED,
                                     parties=[PlatformParty("NL", "CPA", "CPO")]))
        store.gate.set()
        await reader
        current = registry.get("p1")
        assert current is not None and current.name == "after"
        assert current.status == ConnectionStatus.SUSPENDED
        await registry.load()  # a read that starts after the change sees it from the store too
        current = registry.get("p1")
        assert current is not None and current.name == "after"
    finally:
        store.gate.set()
        await store.close()
