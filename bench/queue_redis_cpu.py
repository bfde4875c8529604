"""Redis CPU per routed request: what the delivery queue's two script calls (enqueue with claim, ack) cost Redis.

Why it exists: Redis runs on one core for every hub process that shares it, so its CPU per routed request sets
how many requests per second a whole deployment can route, however many hub processes it runs. This drives the
queue the way a routed request does (``DeliveryQueue.enqueue(claim=True)`` of a 1 kB payload, then ``ack_soon``),
``--concurrency`` at a time, against a Redis of its own started on a free port (nothing else talks to it), and
reports that Redis's CPU per request (``INFO cpu``, main thread, user + system) and the scripts' share of it
(``INFO commandstats``: each command's time, the scripts' with the commands they run). Each round is a new key
prefix; the median round is reported.

Usage: python bench/queue_redis_cpu.py [--requests 20000] [--concurrency 32] [--rounds 3] [--hub-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hub-src", type=Path, help="measure the queue of another checkout (A/B)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args()


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    from common import free_port

    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


async def one_round(port: int, requests: int, concurrency: int) -> dict[str, float]:
    from redis.asyncio import Redis

    from routing.queue import DeliveryQueue, Message

    redis = Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            await redis.ping()
            break
        except Exception:
            await asyncio.sleep(0.05)
    queue = DeliveryQueue(redis, prefix="bench-" + uuid.uuid4().hex[:8])
    payload = os.urandom(512).hex().encode()  # a 1 kB forward request, as the hub encodes a routed GET's
    todo = iter(range(requests))

    async def worker(receiver: str) -> None:
        for _ in todo:
            msg = Message(receiver=receiver, group="", payload=payload, deadline=time.time() + 30, origin="proc")
            if not await queue.enqueue(msg, claim=True):
                raise RuntimeError("the message was not leased to its sender: the in-flight cap is too low")
            await queue.ack_soon(msg)

    for i in range(3):  # warm-up: scripts loaded, connections open
        await worker(f"warm{i}")
    todo = iter(range(requests))
    await redis.config_resetstat()
    before = await redis.info("cpu")
    await asyncio.gather(*(worker("receiver") for _ in range(concurrency)))
    after = await redis.info("cpu")
    stats = await redis.info("commandstats")
    await queue.close()
    await redis.aclose()
    cpu = sum(after[k] - before[k] for k in ("used_cpu_user_main_thread", "used_cpu_sys_main_thread"))
    scripts = sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    zadd = stats.get("cmdstat_zadd", {}).get("usec", 0)
    return {"redis_cpu_us": 1e6 * cpu / requests, "scripts_us": scripts / requests, "zadd_us": zadd / requests}


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str((args.hub_src or Path(__file__).resolve().parent.parent).resolve()))
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="ocpi-bench-redis-") as tmp:
        proc, port = start_redis(Path(tmp))
        try:
            for i in range(args.rounds):
                got = asyncio.run(one_round(port, args.requests, args.concurrency))
                rounds.append(got)
                print(f"round {i + 1}/{args.rounds}: Redis CPU {got['redis_cpu_us']:.1f} µs per request, scripts "
                      f"{got['scripts_us']:.1f} µs (ZADD inside them {got['zadd_us']:.1f} µs)", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    fig: dict[str, Any] = {k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]}
    fig.update(requests=args.requests, concurrency=args.concurrency, rounds=args.rounds,
               hub_src=str(args.hub_src or Path(__file__).resolve().parent.parent))
    print(f"median: Redis CPU {fig['redis_cpu_us']} µs per routed request (enqueue with claim + ack), scripts "
          f"{fig['scripts_us']} µs, ZADD {fig['zadd_us']} µs")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
