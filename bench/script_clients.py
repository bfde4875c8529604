"""CPU per pipelined Lua script call: the hub's lean connection (routing/resp.py) against Redis client libraries.

Why it exists: the queue runs two scripts per routed request (enqueue, ack), and the cost of the client that
sends them is part of every request. This runs the same script call (the shape of ``ack``: 8 keys, 7 arguments)
``--calls`` times, ``--concurrency`` at a time, through each client in its best pipelined form, and reports the
client process's CPU time per call (user + system, ``time.process_time``): what the hub's one core pays, which
wall-clock time on a shared machine does not show. Each client runs ``--rounds`` times, in turn; the median is
reported.

Clients: ``resp`` (the hub's), ``redis-py`` (a ``pipeline(transaction=False)`` per batch), and, when installed
(they are not project dependencies), ``coredis`` (its pipeline) and ``valkey-glide`` (a non-atomic ``Batch``).

Usage: python bench/script_clients.py [--calls 20000] [--concurrency 32] [--rounds 3] [--redis redis://127.0.0.1:6379]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCRIPT = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[1])
"""
PREFIX = "{bench-clients}:"
KEYS = [f"{PREFIX}k{i}" for i in range(8)]
ARGS = [f"{PREFIX}", "1733234567.123456", f"{PREFIX}wake", "0192abcd12345678", "1", "recv1:msg:0192abcd", "recv1"]

Batch = Callable[[int], Awaitable[None]]  # runs n script calls, pipelined; returns when all are answered


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--redis", default="redis://127.0.0.1:6379")
    return p.parse_args()


async def lean(url: str) -> tuple[Batch, Callable[[], Awaitable[None]]]:
    from redis.asyncio import Redis

    from routing.resp import ScriptConnection

    parts = urlsplit(url)
    conn = ScriptConnection(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
    script = Redis.from_url(url).register_script(SCRIPT)

    async def batch(n: int) -> None:
        await asyncio.gather(*(conn.submit(script, KEYS, ARGS) for _ in range(n)))

    return batch, conn.close


async def redis_py(url: str) -> tuple[Batch, Callable[[], Awaitable[None]]]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    sha = await client.script_load(SCRIPT)

    async def batch(n: int) -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(n):
            pipe.evalsha(sha, len(KEYS), *KEYS, *ARGS)
        await pipe.execute()

    return batch, client.aclose


async def coredis_client(url: str) -> tuple[Batch, Callable[[], Awaitable[None]]]:
    import coredis

    client: Any = coredis.Redis.from_url(url)
    if hasattr(client, "__aenter__") and not hasattr(client, "script_load"):
        client = await client.__aenter__()
    ctx = None
    if hasattr(client, "__aenter__"):
        ctx = client
        await client.__aenter__()
    sha = await client.script_load(SCRIPT)

    async def batch(n: int) -> None:
        pipeline = client.pipeline(transaction=False)
        if hasattr(pipeline, "__aenter__"):  # coredis 5+: the pipeline runs when its block ends
            async with pipeline as pipe:
                for _ in range(n):
                    pipe.evalsha(sha, KEYS, ARGS)
        else:
            async with await pipeline as pipe:
                for _ in range(n):
                    await pipe.evalsha(sha, KEYS, ARGS)
                await pipe.execute()

    async def close() -> None:
        if ctx is not None:
            await ctx.__aexit__(None, None, None)

    return batch, close


async def glide(url: str) -> tuple[Batch, Callable[[], Awaitable[None]]]:
    from glide import Batch as GlideBatch
    from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script

    parts = urlsplit(url)
    client = await GlideClient.create(GlideClientConfiguration(
        [NodeAddress(parts.hostname or "127.0.0.1", parts.port or 6379)]))
    script = Script(SCRIPT)
    await client.invoke_script(script, keys=KEYS, args=ARGS)  # loads it
    sha = script.get_hash()

    async def batch(n: int) -> None:
        b = GlideBatch(is_atomic=False)
        for _ in range(n):
            b.custom_command(["EVALSHA", sha, str(len(KEYS)), *KEYS, *ARGS])
        await client.exec(b, raise_on_error=True)

    return batch, client.close


CLIENTS: dict[str, Callable[[str], Awaitable[tuple[Batch, Callable[[], Awaitable[None]]]]]] = {
    "resp": lean, "redis-py": redis_py, "coredis": coredis_client, "valkey-glide": glide}


async def measure(batch: Batch, calls: int, concurrency: int, url: str) -> float:
    """Client CPU microseconds per call over ``calls`` calls, ``concurrency`` per pipelined batch."""
    import redis

    check = redis.Redis.from_url(url)
    await batch(concurrency)  # warm-up: connections made, code paths hot
    check.delete(KEYS[0])
    started = time.process_time()
    done = 0
    while done < calls:
        n = min(concurrency, calls - done)
        await batch(n)
        done += n
    spent = time.process_time() - started
    ran = int(check.get(KEYS[0]) or 0)
    check.delete(KEYS[0])
    if ran != calls:  # every call must really have run in Redis
        raise RuntimeError(f"{ran} script calls ran in Redis, {calls} sent")
    return spent / calls * 1e6


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    made: dict[str, tuple[Batch, Callable[[], Awaitable[None]]]] = {}
    for name, make in CLIENTS.items():
        try:
            made[name] = await make(args.redis)
        except ImportError:
            results[name] = "not installed"
    try:
        rounds: dict[str, list[float]] = {name: [] for name in made}
        for _ in range(args.rounds):
            for name, (batch, _) in made.items():
                rounds[name].append(await measure(batch, args.calls, args.concurrency, args.redis))
        for name, figures in rounds.items():
            results[name] = {"cpu_us_per_call": round(statistics.median(figures), 1),
                             "rounds": [round(f, 1) for f in figures]}
    finally:
        for _, close in made.values():
            await close()
    return results


def main() -> int:
    args = parse_args()
    try:
        import uvloop

        uvloop.install()  # as the hub runs
    except ImportError:
        pass
    results = asyncio.run(main_async(args))
    versions = {}
    for dist in ("redis", "hiredis", "coredis", "valkey-glide"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = None
    print(json.dumps({"calls": args.calls, "concurrency": args.concurrency, "versions": versions,
                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
