"""Redis Sentinel and TLS (docs/high-availability.md): the URL forms, which script runner each gets, the lean
connection following the primary, WAIT before a 1000, and how failover errors are classified.

The whole failover under ``serve --workers 2`` is tests/test_failover.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError

from hub.app import connect_redis
from hub.settings import SettingsError, load_settings
from routing import keys
from routing.batching import ScriptBatcher, script_runner
from routing.queue import DeliveryQueue, Message
from routing.redis_health import REFUSING_WRITES, UNREACHABLE, outage_kind
from routing.redis_url import SentinelTarget, parse_sentinel_url
from routing.resp import ScriptConnection
from routing.sentinel import primary_pool
from tests.conftest import free_port, hub_settings, scratch_redis, self_signed_certificate
from tests.sentinel_topology import SERVICE, Node, SentinelTopology, online_replicas, redis_node, wait_for

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


# -- the URL ------------------------------------------------------------------------------------------------
def test_sentinel_url_names_sentinels_service_db_and_credentials() -> None:
    target = parse_sentinel_url("redis+sentinel://hub:s%40cret@10.0.0.1:26379,sentinel-b,[::1]:26380/hubredis/2"
                                "?sentinel_password=sp")
    assert target == SentinelTarget(sentinels=(("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 26380)),
                                    service="hubredis", db=2, username="hub", password="s@cret",
                                    sentinel_password="sp")
    plain = parse_sentinel_url("redis+sentinel://:pw@s1:1,s2:2/svc")
    assert (plain.username, plain.password, plain.db, plain.tls) == (None, "pw", 0, False)
    tls = parse_sentinel_url("rediss+sentinel://s1/svc?ssl_ca_certs=/ca.pem&sentinel_tls=no")
    assert (tls.tls, tls.sentinel_tls, tls.tls_options) == (True, False, (("ssl_ca_certs", "/ca.pem"),))


@pytest.mark.parametrize(("url", "why"), [
    ("redis+sentinel://:pw@/svc", "names no Sentinel"),
    ("redis+sentinel://:pw@s1:26379", "names no Sentinel service"),
    ("redis+sentinel://:pw@s1:x/svc", "Sentinel port that is not a number"),
    ("redis+sentinel://:pw@s1/svc/zero", "database that is not a number"),
    ("redis+sentinel://:pw@s1/svc?password=x", "unknown option 'password'"),
    ("redis+sentinel://:pw@s1/svc?ssl_ca_certs=/ca.pem", "without TLS"),
    ("http://:pw@redis:6379/0", "must start with redis://"),
    ("redis://:pw@redis:port/0", "invalid port"),
])
def test_a_bad_redis_url_is_one_line_without_the_password(monkeypatch: pytest.MonkeyPatch, url: str, why: str) -> None:
    monkeypatch.setenv("HUB_REDIS_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid setting HUB_REDIS_URL: ") and why in message, message
    assert "\n" not in message and "pw" not in message


def test_waiting_for_replicas_needs_a_real_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_REDIS_WAIT_REPLICAS", "1")
    with pytest.raises(SettingsError, match="HUB_REDIS_WAIT_REPLICAS='1': needs HUB_REDIS_URL"):
        load_settings()
    monkeypatch.setenv("HUB_REDIS_URL", "redis+sentinel://s1,s2,s3/hubredis")
    assert load_settings().redis_wait_replicas == 1


async def test_each_url_form_gets_its_script_runner() -> None:
    """Sentinel without TLS keeps the lean connection (following the primary); TLS keeps redis-py's batcher."""
    cases = {"redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc": ScriptConnection,
             "rediss+sentinel://127.0.0.1:1/svc": ScriptBatcher,
             "rediss://127.0.0.1:1/0": ScriptBatcher,
             "redis://127.0.0.1:1/0": ScriptConnection}
    for url, runner_class in cases.items():
        redis = connect_redis(hub_settings(redis_url=url, redis_timeout=0.7))
        runner = script_runner(redis)
        assert type(runner) is runner_class, url
        if isinstance(runner, ScriptConnection):
            assert (runner.locate is not None) == url.startswith("redis+sentinel"), url
            assert (runner.connect_timeout, runner.command_timeout) == (0.7, 0.7)
        await runner.close()
        await redis.aclose()


# -- failover errors are outages (503), not bugs (500) ----------------------------------------------------
def test_failover_errors_are_outages() -> None:
    assert outage_kind(ResponseError("READONLY You can't write against a read only replica.")) == REFUSING_WRITES
    assert outage_kind(ReadOnlyError("You can't write against a read only replica.")) == REFUSING_WRITES
    assert outage_kind(ResponseError("NOREPLICAS 0 of 1 replicas acknowledged the write within 500 ms")) \
        == REFUSING_WRITES
    assert outage_kind(MasterNotFoundError("No master found for 'hubredis'")) == UNREACHABLE
    assert outage_kind(ConnectionError("cannot connect to Redis for queue scripts: ConnectionRefusedError")) \
        == UNREACHABLE
    assert outage_kind(ResponseError("ERR wrong number of arguments")) is None


# -- the lean connection follows the primary -----------------------------------------------------------------
def message() -> Message:
    return Message(receiver="R", group="", payload=b"{}", deadline=time.time() + 30)


@needs_redis_server
async def test_lean_connection_leaves_a_demoted_primary_and_asks_where_the_new_one_is(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with scratch_redis(tmp_path / "a") as url_a, scratch_redis(tmp_path / "b") as url_b:
        a, b = sync_redis.Redis.from_url(url_a), sync_redis.Redis.from_url(url_b)
        where = {"primary": int(a.connection_pool.connection_kwargs["port"])}
        asked: list[int] = []

        async def locate() -> tuple[str, int]:
            asked.append(where["primary"])
            return "127.0.0.1", where["primary"]

        redis = Redis.from_url(url_a)
        queue = DeliveryQueue(redis, prefix="lean-follow")
        lean = ScriptConnection(locate=locate, connect_timeout=1.0, command_timeout=1.0)
        queue._runner = lean  # the runner script_runner() builds for a Sentinel client, on a locator of our own
        try:
            assert not await queue.enqueue(message())
            # A is demoted (Sentinel does this to an old primary that comes back): the next write is READONLY,
            # an outage (503), and the connection is dropped so the next call asks where the primary is now.
            a.replicaof("127.0.0.1", b.connection_pool.connection_kwargs["port"])
            with pytest.raises(ResponseError) as caught:
                await queue.enqueue(message())
            assert outage_kind(caught.value) == REFUSING_WRITES
            # Sentinel has not caught up yet (still names A): the ROLE check refuses a replica, as an outage.
            with pytest.raises(ConnectionError, match="is not the primary") as refused:
                await queue.enqueue(message())
            assert outage_kind(refused.value) == UNREACHABLE
            where["primary"] = int(b.connection_pool.connection_kwargs["port"])
            assert not await queue.enqueue(message())
            assert asked == [asked[0], asked[0], where["primary"]]
            assert b.exists("{lean-follow}:receivers") == 1
        finally:
            await queue.close()
            await redis.aclose()
            a.replicaof("NO", "ONE")


@needs_redis_server
async def test_sentinel_client_follows_a_failover_and_counts_it(tmp_path: Path) -> None:
    """SENTINEL FAILOVER demotes a live primary: redis-py's connections, pub/sub and the lean connection all move."""
    with SentinelTopology(tmp_path, replicas=1) as topology:
        redis = connect_redis(hub_settings(redis_url=topology.url(), redis_timeout=1.0))
        pool = primary_pool(redis)
        assert pool is not None
        changes: list[tuple[tuple[str, int], tuple[str, int]]] = []
        pool.on_change = lambda old, new: changes.append((old, new))
        queue = DeliveryQueue(redis, prefix="sentinel-follow")
        pubsub = redis.pubsub()
        try:
            assert isinstance(queue._runner, ScriptConnection)
            await pubsub.subscribe("sentinel-follow:wake")
            assert not await queue.enqueue(message())
            old = topology.primary_port()
            assert topology.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", SERVICE)
            await asyncio.to_thread(wait_for, lambda: topology.primary_port() != old, "the failover")
            new = topology.primary_port()
            now = sync_redis.Redis(port=new)
            deadline = time.monotonic() + 15
            # 503s (or writes to the old primary, not yet demoted: lost with it) until both the lean connection and
            # redis-py write to `new`. They move independently: redis-py's pool may have moved while the lean
            # connection's last write still reached the old primary, so each write is looked for on `new`.
            while True:
                try:
                    after = Message(receiver=f"R{time.monotonic_ns()}", group="", payload=b"{}",
                                    deadline=time.time() + 30)
                    assert not await queue.enqueue(after)
                    await redis.set("sentinel-follow:probe", after.receiver)
                    if changes and now.exists(keys.pending("sentinel-follow", after.receiver)) == 1:
                        break  # the lean connection moved
                except (ConnectionError, ResponseError) as exc:
                    assert outage_kind(exc) is not None, exc
                await asyncio.sleep(0.1)
                assert time.monotonic() < deadline, "the hub still writes to the old primary"
            assert now.get("sentinel-follow:probe") == after.receiver.encode()  # and redis-py's
            assert changes == [(("127.0.0.1", old), ("127.0.0.1", new))]
            # Pub/sub: its connection to the old primary was cut; like the delivery listener, the next read after
            # the error reconnects (asking the Sentinels) and subscribes again, on the new primary.
            heard = None
            for _ in range(100):
                try:
                    if await redis.publish("sentinel-follow:wake", b"hello"):
                        heard = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                        if heard:
                            break
                    else:
                        await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                except ConnectionError:
                    await asyncio.sleep(0.1)
            assert heard is not None and heard["data"] == b"hello"
        finally:
            await pubsub.aclose()
            await queue.close()
            await redis.aclose()


# -- WAIT before the 1000 ---------------------------------------------------------------------------------
@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    (tmp_path / "primary").mkdir()
    with scratch_redis(tmp_path / "primary") as url:
        replica = redis_node(tmp_path, "replica")
        replica.start("--replicaof", "127.0.0.1", url.rsplit(":", 1)[1].split("/")[0])
        replica_of = Node(tmp_path, "primary")
        replica_of.port = int(url.rsplit(":", 1)[1].split("/")[0])
        try:
            wait_for(lambda: online_replicas(replica_of) == 1, "the replica")
            assert replica.proc is not None
            yield url, replica.proc
        finally:
            if replica.proc is not None and replica.proc.poll() is None:
                os.kill(replica.proc.pid, signal.SIGCONT)
            replica.stop()


@needs_redis_server
@pytest.mark.parametrize("runner", ["lean", "redis-py"])
async def test_an_accepted_message_waits_for_its_replica(
        primary_and_replica: tuple[str, subprocess.Popen[bytes]], runner: str) -> None:
    url, replica = primary_and_replica
    redis = Redis.from_url(url)
    queue = DeliveryQueue(redis, prefix="wait-" + runner, wait_replicas=1, wait_timeout=0.3)
    if runner == "redis-py":  # what TLS and credential providers get
        await queue._replicated.close()  # type: ignore[union-attr]
        queue._replicated = ScriptBatcher(redis)
    try:
        assert await asyncio.gather(*(queue.enqueue(message()) for _ in range(5))) == [False] * 5
        assert await queue.enqueue(message(), claim=True), "a routed request never waits for replicas"
        os.kill(replica.pid, signal.SIGSTOP)  # a replica that does not acknowledge
        try:
            with pytest.raises(ResponseError, match="NOREPLICAS 0 of 1") as caught:
                await queue.enqueue(message())
            assert outage_kind(caught.value) == REFUSING_WRITES  # 503 + Retry-After, never 1000
            assert await queue.enqueue(message(), claim=True), "routed requests go on meanwhile"
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        assert not await queue.enqueue(message())
        await redis.script_flush()  # NOSCRIPT: sent again, and still waited for
        assert not await queue.enqueue(message())
    finally:
        await queue.close()
        await redis.aclose()


# -- TLS ------------------------------------------------------------------------------------------------------
@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """A redis-server that speaks only TLS, with a self-signed certificate for 127.0.0.1."""
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                               str(cert), "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield port, cert, server
    finally:
        server.terminate()
        server.wait(timeout=10)


@needs_redis_server
async def test_rediss_url_reaches_a_tls_redis_through_the_batcher(
        tls_redis: tuple[int, Path, subprocess.Popen[bytes]]) -> None:
    port, cert, server = tls_redis
    redis = connect_redis(hub_settings(redis_url=f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"))
    deadline = time.monotonic() + 10
    while True:
        try:
            assert await redis.ping()
            break
        except ConnectionError:
            if server.poll() is not None:
                pytest.skip("this redis-server has no TLS support")
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    queue = DeliveryQueue(redis, prefix="tls")
    try:
        assert isinstance(queue._runner, ScriptBatcher)
        msg = message()
        assert await queue.enqueue(msg, claim=True)
        assert await queue.ack(msg)
    finally:
        await queue.close()
        await redis.aclose()
    plain = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
    with pytest.raises(ConnectionError):  # the server really speaks only TLS
        await plain.ping()
    await plain.aclose()
