"""Fallback load generator when wrk cannot be installed: closed-loop aiohttp clients, same output as ocpi.lua.

It is much slower than wrk and competes harder for the 2 cores, so its req/s understate both hub and bare
proxy; the ratio stays meaningful. Parameters: argv URL CONNECTIONS DURATION, the rest as BENCH_* env vars.

Usage: pyload.py URL CONNECTIONS DURATION_SECONDS
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import aiohttp
from common import install_uvloop


def percentile(sorted_us: list[float], p: float) -> float:
    if not sorted_us:
        return 0.0
    return sorted_us[min(len(sorted_us) - 1, int(len(sorted_us) * p / 100))]


def read_routes(path: str) -> list[dict[str, str]]:
    """As in ocpi.lua: each request takes the next line's caller token and routing headers (none: fixed ones)."""
    if not path:
        return []
    names = ("Authorization", "OCPI-from-country-code", "OCPI-from-party-id", "OCPI-to-country-code",
             "OCPI-to-party-id")
    lines = Path(path).read_text().splitlines()
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines if line.strip()]


async def main(url: str, connections: int, duration: float, routes: list[dict[str, str]]) -> None:
    env = os.environ
    random_ids = env.get("BENCH_IDS") == "random"
    run = env.get("BENCH_RUN", "0")  # see ocpi.lua: request ids never repeat across runs
    method, base_path, id_space = env["BENCH_METHOD"], env["BENCH_BASE_PATH"], int(env.get("BENCH_ID_SPACE", "10000"))
    owner = (env.get("BENCH_OWNER_CC", ""), env.get("BENCH_OWNER_PID", ""))
    fixed = {"Authorization": env["BENCH_AUTH"], "OCPI-from-country-code": env["BENCH_FROM_CC"],
             "OCPI-from-party-id": env["BENCH_FROM_PID"], "OCPI-to-country-code": env["BENCH_TO_CC"],
             "OCPI-to-party-id": env["BENCH_TO_PID"]}
    if method != "GET":
        fixed["Content-Type"] = "application/json"
    latencies: list[float] = []
    counts = {"n": 0, "non2xx": 0, "bad_ocpi": 0, "read": 0, "timeout": 0}
    start = time.perf_counter()
    deadline = start + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            counts["n"] += 1
            n = counts["n"]
            loc = f"LOC{n % id_space}"
            if random_ids:  # as platforms send them (ocpi.lua, BENCH_IDS)
                headers = {**fixed, "X-Request-ID": str(uuid.uuid4()), "X-Correlation-ID": str(uuid.uuid4())}
            else:
                headers = {**fixed, "X-Request-ID": f"bench-py-{run}-{n}",
                           "X-Correlation-ID": f"bench-py-corr-{run}-{n}"}
            if routes:
                headers.update(routes[n % len(routes)])
            body = None
            if method != "GET":
                body = json.dumps({"country_code": owner[0], "party_id": owner[1], "id": loc, "publish": True,
                                   "address": "Stationsplein 1", "city": "Utrecht", "country": "NLD",
                                   "coordinates": {"latitude": "52.089", "longitude": "5.110"},
                                   "time_zone": "Europe/Amsterdam", "last_updated": "2024-01-01T00:00:00Z"},
                                  separators=(",", ":")).encode()
            t0 = time.perf_counter()
            try:
                async with session.request(method, f"{url}{base_path}/{loc}", headers=headers, data=body) as resp:
                    raw = await resp.read()
                    if not 200 <= resp.status < 300:
                        counts["non2xx"] += 1
                    elif b'"status_code":1000' not in raw:
                        counts["bad_ocpi"] += 1
            except TimeoutError:
                counts["timeout"] += 1
                continue
            except (aiohttp.ClientError, OSError):
                counts["read"] += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1e6)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    doc = {"requests": len(latencies), "duration_us": int(elapsed * 1e6),
           "non2xx": counts["non2xx"], "bad_ocpi": counts["bad_ocpi"],
           "socket_errors": {"connect": 0, "read": counts["read"], "write": 0, "timeout": counts["timeout"]},
           "latency_us": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                          "p99": percentile(latencies, 99), "p999": percentile(latencies, 99.9),
                          "mean": sum(latencies) / max(len(latencies), 1), "max": latencies[-1] if latencies else 0}}
    print("BENCH_JSON " + json.dumps(doc), flush=True)


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                     read_routes(os.environ.get("BENCH_ROUTES_FILE", ""))))
