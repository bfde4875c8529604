"""What keeping a process's platform view in step costs with many platforms (hub/registry.py).

Saves ``--platforms`` platforms (sealed tokens, as the hub stores them) into a SQLite store through one registry,
then times a second registry's ``load()`` (the periodic reload every process runs, ``full_reload_every``) three
ways: the first load, again with nothing changed, and after one platform changed; and one ``save()``. A ticker task
records the longest the event loop was held meanwhile: requests wait that long.

Usage: python bench/registry_reload.py [--platforms 10000] [--src DIR]   (--src: another checkout, for A/B)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time


async def main(count: int) -> None:
    from hub.registry import PlatformRegistry
    from hub.store.sqlite import SqliteStore
    from routing.platform import Party, Platform, hash_token

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(os.path.join(tmp, "hub.db"))
        await store.open()
        writer = PlatformRegistry(store)
        for n in range(count):
            party = Party(chr(65 + n // 676 % 26) + chr(65 + n // 26 % 26), f"X{n % 26:02d}", "CPO")
            await writer.save(Platform(id=f"p{n:05d}", name=f"P{n}", parties=[party],
                                       inbound_token_hash=hash_token(f"t{n}"), outbound_token=f"token-b-{n}",
                                       versions_url=f"https://p{n}.example/versions"))
        view = PlatformRegistry(store)
        loop = asyncio.get_running_loop()
        longest = [0.0]

        async def ticker() -> None:
            last = loop.time()
            while True:
                await asyncio.sleep(0.001)
                now = loop.time()
                longest[0], last = max(longest[0], now - last), now

        for label in ("first load", "reload, nothing changed", "reload, one platform changed"):
            if label.endswith("changed") and "one" in label:
                changed = writer.get("p00042")
                assert changed is not None
                changed.name = "renamed"
                await writer.save(changed)
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            longest[0] = 0.0
            cpu, wall = time.process_time(), time.perf_counter()
            await view.load()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await asyncio.sleep(0.005)  # the ticker sees the last stall too
            task.cancel()
            print(f"{label}: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU, "
                  f"event loop held up to {longest[0] * 1000:.0f} ms")
        saved = writer.get("p00043")
        assert saved is not None
        cpu = time.process_time()
        await writer.save(saved)
        print(f"one save (view and indexes updated): {(time.process_time() - cpu) * 1000:.1f} ms CPU")
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platforms", type=int, default=10_000)
    parser.add_argument("--src", help="the checkout to measure (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, args.src or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    asyncio.run(main(args.platforms))
