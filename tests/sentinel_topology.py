"""A Redis primary, its replicas and three Sentinels of a test's own, on free loopback ports under tmp_path.

The replication settings are the ones deploy/k8s/sentinel/ ships (docs/high-availability.md): AOF on every node,
Sentinel quorum 2 of 3; only ``down-after-milliseconds`` is shorter here (1 s) so a failover fits in a test.
Sentinels are ``redis-server <conf> --sentinel`` (the same binary as Debian's redis-sentinel).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis as sync_redis

from tests.conftest import free_port

SERVICE = "hubredis"
DOWN_AFTER_MS = 1000


class Node:
    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.name, self.port, self.dir = name, free_port(), tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with open(self.dir / "out.log", "ab") as out:
            self.proc = subprocess.Popen([*self.args, "--port", str(self.port), *extra], cwd=self.dir,
                                         stdout=out, stderr=subprocess.STDOUT)

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def redis_node(tmp: Path, name: str) -> Node:
    return Node(tmp, name, "redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                "--dir", str(tmp / name))


class SentinelTopology:
    """``with SentinelTopology(tmp_path) as t:``: a primary, ``replicas`` replicas, three Sentinels, all ready."""

    def __init__(self, tmp: Path, replicas: int = 1) -> None:
        self.tmp = tmp
        self.nodes = [redis_node(tmp, f"redis-{i}") for i in range(1 + replicas)]
        self.sentinels: list[Node] = []

    # -- start / stop ------------------------------------------------------------------------------------
    def __enter__(self) -> SentinelTopology:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        primary, *replicas = self.nodes
        primary.start()
        wait_for(lambda: bool(primary.client().ping()), "the primary to start")
        for node in replicas:
            node.start("--replicaof", "127.0.0.1", str(primary.port))
        wait_for(lambda: online_replicas(primary) == len(replicas), "the replicas to be in sync")
        for i in range(3):
            sentinel = Node(self.tmp, f"sentinel-{i}", "redis-server", str(self.tmp / f"sentinel-{i}" / "s.conf"),
                            "--sentinel")
            (sentinel.dir / "s.conf").write_text(
                f"bind 127.0.0.1\ndir {sentinel.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            sentinel.start()
            self.sentinels.append(sentinel)

        def ready() -> bool:  # every Sentinel knows the replicas and the two other Sentinels: failover can happen
            for s in self.sentinels:
                master = s.client().sentinel_master(SERVICE)
                if int(master["num-other-sentinels"]) != 2 or int(master["num-slaves"]) != len(replicas):
                    return False
            return True

        wait_for(ready, "the Sentinels to find the replicas and each other", within=30)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()

    # -- what a test asks -------------------------------------------------------------------------------
    def url(self, scheme: str = "redis+sentinel", db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{scheme}://{hosts}/{SERVICE}/{db}"

    def primary_port(self) -> int:
        """The primary as the Sentinels (the first that answers) name it now."""
        for s in self.sentinels:
            try:
                _, port = s.client().sentinel_get_master_addr_by_name(SERVICE)
                return int(port)
            except sync_redis.RedisError:
                continue
        raise AssertionError("no Sentinel answers")

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def primary(self) -> Node:
        return self.node(self.primary_port())


def online_replicas(node: Node) -> int:
    """Replicas in sync with ``node`` (a replica still loading acknowledges nothing: WAIT would not count it)."""
    info = node.client().info("replication")
    return sum(1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)
               and value.get("state") == "online")


def wait_for(check: object, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except sync_redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
