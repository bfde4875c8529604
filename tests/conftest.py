"""Shared fixtures: a real hub app on a free port, fake partner platforms, real Redis when it answers."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
from aiohttp import web
from mongomock_motor import AsyncMongoMockClient

from bench.common import free_port  # one port picker for the tests and the benchmark
from hub.app import create_app
from hub.connections import start_site
from hub.settings import Settings
from hub.store.mongo import MongoStore
from tests.partners import ALL_MODULES, FakePartner, Party

ADMIN_TOKEN = "test-admin-token-7Qx2Lm9Vp4Rz8Kd3"  # strong enough for `serve` outside development
REDIS_URL = "redis://127.0.0.1:6379/0"
SHARED = Path(__file__).resolve().parents[2] / "shared"


class ScratchRedis:
    """A redis-server of a test's own, fsyncing every write to its append-only file in ``dir``; it can be killed
    and started again on the same port and files (``restart``): what it acknowledged comes back from the file.

    ``options`` are more redis-server arguments; with ``password`` it requires AUTH (the URL carries it).
    """

    def __init__(self, dir: Path, *options: str, password: str | None = None) -> None:
        self.port = free_port()
        auth = ["--requirepass", password] if password else []
        self.args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
                     "--appendfsync", "always", "--dir", str(dir), "--save", "", *auth, *options]
        self.url = (f"redis://:{password}@127.0.0.1:{self.port}/0" if password
                    else f"redis://127.0.0.1:{self.port}/0")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if sync_redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping():
                    return
            except (sync_redis.ConnectionError, sync_redis.BusyLoadingError):
                pass
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with ``kill``), then reap it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """kill -9, then a new server on the same port, loading the append-only file."""
        self.stop(kill=True)
        self.start()


@contextmanager
def scratch_redis(tmp_path: Path, *options: str, password: str | None = None) -> Iterator[str]:
    """A ``ScratchRedis`` in tmp_path for the block; yields its URL."""
    server = ScratchRedis(tmp_path, *options, password=password)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


def real_redis_available() -> bool:
    try:
        return bool(sync_redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_runnable() -> bool:
    """What the end-to-end runs of bench/ need on this machine: wrk and the real Redis (the bench's own
    requirements; its tests skip without them)."""
    return shutil.which("wrk") is not None and real_redis_available()


def cleanup_prefix(prefix: str) -> None:
    client = sync_redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match="{" + prefix + "}:*", count=1000))
    if keys:
        client.delete(*keys)


class HubHarness:
    """One running hub plus helpers to drive it like an operator and like partners."""

    def __init__(self, settings: Settings, runner: web.AppRunner, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.runner = runner
        self.session = session
        self.url = settings.public_url
        self.partners: list[FakePartner] = []

    @property
    def app(self) -> web.Application:
        return self.runner.app

    async def admin(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=json,
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def onboard(self, partner: FakePartner) -> dict[str, Any]:
        status, body = await self.admin("POST", "/admin/platforms", {
            "name": partner.name,
            "roles": [{"country_code": p.country_code, "party_id": p.party_id, "role": p.role}
                      for p in partner.parties],
        })
        assert status == 201, body
        return dict(body)

    async def connect(self, partner: FakePartner) -> dict[str, Any]:
        """Onboard, start and register a partner: it is CONNECTED afterwards."""
        if not partner.base_url:
            await partner.start()
            self.partners.append(partner)
        platform = await self.onboard(partner)
        await partner.register(self.session, platform["versions_url"], platform["token_a"])
        return platform


def cpo(name: str = "Alpha CPO", pid: str = "CPA", modules: dict[str, tuple[str, ...]] | None = None) -> FakePartner:
    return FakePartner(name=name, parties=[Party("NL", pid, "CPO")],
                       modules=modules or {m: ("SENDER", "RECEIVER") for m in ALL_MODULES})


def emsp(name: str = "Beta eMSP", pid: str = "EMA", modules: dict[str, tuple[str, ...]] | None = None) -> FakePartner:
    return FakePartner(name=name, parties=[Party("DE", pid, "EMSP")],
                       modules=modules or {m: ("SENDER", "RECEIVER") for m in ALL_MODULES})


async def start_hub(settings: Settings, **kwargs: Any) -> HubHarness:
    runner = await start_site(create_app(settings, **kwargs), settings)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    return HubHarness(settings, runner, session)


async def stop_hub(h: HubHarness) -> None:
    for partner in h.partners:
        await partner.stop()
    await h.session.close()
    await h.runner.cleanup()


def hub_settings(**overrides: Any) -> Settings:
    port = free_port()
    values: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}",
        "sqlite_path": ":memory:", "admin_token": ADMIN_TOKEN, "forward_timeout": 2.0,
        "registration_timeout": 2.0, "key_prefix": "test-" + uuid.uuid4().hex[:8],
        "allow_private_urls": True,  # every fake partner runs on 127.0.0.1 (tests/test_security_ssrf.py: off)
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=["fakeredis", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Queue backend for end-to-end tests: embedded fakeredis, and the real Redis at 127.0.0.1:6379."""
    if request.param == "redis" and not real_redis_available():
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield None if request.param == "fakeredis" else REDIS_URL


@asynccontextmanager
async def running_hub(backend: str | None, **overrides: Any) -> AsyncIterator[HubHarness]:
    """One hub on ``backend`` with ``hub_settings(**overrides)``, stopped (and its Redis keys deleted) after."""
    settings = hub_settings(redis_url=backend, **overrides)
    h = await start_hub(settings)
    try:
        yield h
    finally:
        await stop_hub(h)
        if backend:
            cleanup_prefix(settings.key_prefix)


@pytest.fixture
async def hub(backend: str | None) -> AsyncIterator[HubHarness]:
    async with running_hub(backend) as h:
        yield h


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 made by ``openssl`` (the test is skipped where it is missing)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


MakeHub = Callable[..., Awaitable[HubHarness]]


@asynccontextmanager
async def hubs(backend: str | None, store: str = "sqlite") -> AsyncIterator[MakeHub]:
    """Starts hubs on demand, on one queue backend and one store ("sqlite", or "mongomock", which stands in for
    MongoDB here); stops them all at the end."""
    started: list[HubHarness] = []
    given: list[MongoStore] = []

    async def make(**overrides: Any) -> HubHarness:
        if store == "mongomock":
            given.append(MongoStore(AsyncMongoMockClient(), "hub-" + uuid.uuid4().hex[:8]))
            await given[-1].open()
        h = await start_hub(hub_settings(redis_url=backend, **overrides), store=given[-1] if given else None)
        started.append(h)
        return h

    try:
        yield make
    finally:
        for h in started:
            await stop_hub(h)
            if backend:
                cleanup_prefix(h.settings.key_prefix)
        for mongo in given:
            await mongo.close()


@pytest.fixture
async def make_hub(backend: str | None) -> AsyncIterator[MakeHub]:
    """Hubs with settings of the test's choosing (timeouts, limits, windows), on the ``hub`` fixture's backends."""
    async with hubs(backend) as make:
        yield make


@pytest.fixture(params=["sqlite", "mongomock"])
async def make_store_hub(request: pytest.FixtureRequest, backend: str | None) -> AsyncIterator[MakeHub]:
    """``make_hub`` on both stores (for tests where what lives in the store matters) and both queue backends."""
    async with hubs(backend, request.param) as make:
        yield make


# The official OCPI example payloads (ocpi/ocpi, examples/<version>/), kept outside the repository beside it.
OCPI_EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "ocpi" / "examples"


def ocpi_examples(version: str) -> list[Path]:
    """The official example files of one version, or a clean skip where they are not beside the repository."""
    folder = OCPI_EXAMPLES / version
    if not folder.is_dir():
        pytest.skip(f"official OCPI {version} examples not found at {folder}")
    return sorted(folder.glob("*.json"))
