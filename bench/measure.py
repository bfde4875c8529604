"""One measured scenario: probe, warm-up, a timed load run, and the CPU every process used meanwhile.

CPU shares tell where the time went (a hub at 100% of a core is CPU-bound) and reveal noise from other
processes on a shared machine, which the report flags.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import hubproc
import loadgen
import report
from common import Child, cpu_seconds
from loadgen import Load

PROBE_PUT = ('{"country_code":"%s","party_id":"%s","id":"PROBE","publish":true,"address":"Stationsplein 1",'
             '"city":"Utrecht","country":"NLD","coordinates":{"latitude":"52.089","longitude":"5.110"},'
             '"time_zone":"Europe/Amsterdam","last_updated":"2024-01-01T00:00:00Z"}')


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from the first line of /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(f) - f[3] - f[4], sum(f)


async def probe(session: aiohttp.ClientSession, origin: str, load: Load) -> None:
    """One request before the load: a benchmark of errors is worthless, so stop at the first one."""
    headers = {"Authorization": load.auth, "X-Request-ID": "probe", "X-Correlation-ID": "probe",
               "OCPI-from-country-code": load.from_[0], "OCPI-from-party-id": load.from_[1],
               "OCPI-to-country-code": load.to[0], "OCPI-to-party-id": load.to[1]}
    body = None
    if load.method == "PUT":
        headers["Content-Type"] = "application/json"
        body = (PROBE_PUT % load.owner).encode()
    url = f"{origin}{load.base_path}/PROBE"
    async with session.request(load.method, url, headers=headers, data=body) as resp:
        text = await resp.text()
    if resp.status != 200 or '"status_code":1000' not in text:
        raise RuntimeError(f"probe {load.method} {url}: HTTP {resp.status} {text[:500]}")


@dataclass
class Scenario:
    """Where to send one load and which processes' CPU to account."""

    target: str  # "hub" | "bare"
    origin: str  # http://127.0.0.1:port
    load: Load
    procs: dict[str, Child] = field(default_factory=dict)
    redis_url: str | None = None

    @property
    def name(self) -> str:
        return f"{self.target} {self.load.name}"


Runner = Callable[[Load, str, float], Awaitable[loadgen.Result]]
Counter = Callable[[], Awaitable[int]]


async def measure(sc: Scenario, run: Runner, received: Counter, duration: float, warmup: float) -> report.Measured:
    """Warm up, then one timed run; CPU shares are of one core over the run's wall time."""
    if warmup > 0:
        await run(sc.load, sc.origin, warmup)
    seen0 = await received()
    cpu0 = {k: cpu_seconds(c.pid) for k, c in sc.procs.items()}
    redis0 = hubproc.redis_info(sc.redis_url)["cpu_s"] if sc.redis_url else 0.0
    busy0, total0 = machine_jiffies()
    t0 = time.monotonic()
    result = await run(sc.load, sc.origin, duration)
    wall = time.monotonic() - t0
    busy1, total1 = machine_jiffies()
    cpu = {k: round(100 * (cpu_seconds(c.pid) - cpu0[k]) / wall, 1) for k, c in sc.procs.items()}
    if sc.redis_url:
        cpu["redis"] = round(100 * (hubproc.redis_info(sc.redis_url)["cpu_s"] - redis0) / wall, 1)
    cpu["loadgen"] = round(100 * result.loadgen_cpu_s / wall, 1)
    machine = 100 * (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)
    cpu["other"] = round(max(0.0, machine - sum(cpu.values())), 1)  # not ours: noise on a shared machine
    cpu["machine"] = round(machine, 1)
    return report.Measured(sc.name, sc.target, sc.load.name, result, cpu, await received() - seen0)
