"""Broadcast fan-out: the CPO pushes Locations TO the hub (NL/HUB); the hub answers 1000 once it has queued one
delivery per connected eMSP, then delivers them. How fast, how late the last receiver, anything lost or doubled?

Ten fake eMSPs (``receiver.py --record``, one process, one port each) register as ten platforms, one party
each (DE/E00..DE/E09). The sender (this process) sends ``BC<seq>`` location PUTs at a fixed concurrency, paced
to a fixed rate, and notes ``time.time()`` when each 1000 answer has been read; every receiver notes
``time.time()`` when each broadcast arrives. All on one machine, so both use the same clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import hubproc
import onboard
from common import LOOPBACK, Child, cpu_seconds, free_port, python_argv, wait_http
from measure import machine_jiffies

ACCEPTED = re.compile(r"accepted for (\d+) receivers")
OWNER = ("NL", "CPA")  # the sender's CPO: path owner, body owner and FROM
HUB_PARTY = ("NL", "HUB")


def party_ids(n: int) -> list[str]:
    return [f"E{i:02d}" for i in range(n)]


def location(location_id: str) -> bytes:
    """A small Location whose id is the broadcast's sequence: unique per broadcast, so never coalesced."""
    return (b'{"country_code":"NL","party_id":"CPA","id":"' + location_id.encode() + b'","publish":true,'
            b'"address":"Stationsplein 1","city":"Utrecht","country":"NLD",'
            b'"coordinates":{"latitude":"52.089","longitude":"5.110"},"time_zone":"Europe/Amsterdam",'
            b'"last_updated":"2024-01-01T00:00:00Z"}')


@dataclass
class Sent:
    """One broadcast as the sender saw it; times are ``time.time()`` seconds."""

    id: str
    started: float = 0.0
    accepted: float | None = None  # when the 1000 answer had been read
    fanned_out_to: int | None = None  # N of the hub's "accepted for N receivers"
    error: str = ""


@dataclass
class FanoutReceivers:
    """The ten eMSP platforms: one child process, one port and Token B each, registered with the hub."""

    count: int
    parties: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    child: Child | None = None

    def urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{port}" for port in self.ports]

    def child_for(self, log_dir: Any) -> Child:
        self.parties = party_ids(self.count)
        self.ports = [free_port() for _ in self.parties]
        self.tokens = ["B-fan-" + os.urandom(8).hex() for _ in self.parties]
        argv = ["--record"] + [x for pt in zip(self.ports, self.tokens, strict=True) for x in (str(pt[0]), pt[1])]
        self.child = Child("fanout_receivers", python_argv("receiver.py", *argv), log_dir)
        return self.child

    async def wait_ready(self) -> None:
        for url in self.urls():
            await wait_http(f"{url}/healthz", 30, self.child)

    async def register(self, session: aiohttp.ClientSession, hub_url: str) -> None:
        """Each party its own platform, onboarded and registered like any partner (Token A → B → C)."""
        for pid, url, token_b in zip(self.parties, self.urls(), self.tokens, strict=True):
            await onboard.connect(session, hub_url, hubproc.ADMIN_TOKEN, f"Bench eMSP {pid}", [("DE", pid, "EMSP")],
                                  f"{url}/ocpi/versions", token_b)

    async def delivered(self, session: aiohttp.ClientSession) -> int:
        """Broadcast PUTs all receivers answered so far (cheap: the per-method counters)."""
        total = 0
        for url in self.urls():
            async with session.get(f"{url}/stats") as resp:
                total += int((await resp.json()).get("PUT", 0))
        return total

    async def arrivals(self, session: aiohttp.ClientSession) -> dict[str, dict[str, list[float]]]:
        """party id -> broadcast id -> arrival times."""
        out = {}
        for pid, url in zip(self.parties, self.urls(), strict=True):
            async with session.get(f"{url}/broadcasts") as resp:
                out[pid] = (await resp.json())["arrivals"]
        return out


async def send_all(base_url: str, auth: str, ids: list[str], concurrency: int, rate: float) -> list[Sent]:
    """``ids`` as broadcast PUTs by ``concurrency`` workers; with ``rate`` > 0, broadcast i starts no earlier
    than i / rate seconds after the first (open loop, as long as the workers keep up)."""
    sent = [Sent(i) for i in ids]
    order = itertools.count()
    headers = {"Authorization": auth, "Content-Type": "application/json",
               "OCPI-from-country-code": OWNER[0], "OCPI-from-party-id": OWNER[1],
               "OCPI-to-country-code": HUB_PARTY[0], "OCPI-to-party-id": HUB_PARTY[1]}
    t0 = time.monotonic()

    async def worker(session: aiohttp.ClientSession) -> None:
        while (i := next(order)) < len(sent):
            if rate > 0:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            s = sent[i]
            h = {**headers, "X-Request-ID": f"bench-bc-{s.id}", "X-Correlation-ID": f"bench-bc-corr-{s.id}"}
            s.started = time.time()
            try:
                async with session.put(f"{base_url}/{s.id}", data=location(s.id), headers=h) as resp:
                    doc = await resp.json(content_type=None)
                    done = time.time()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                s.error = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status != 200 or not isinstance(doc, dict) or doc.get("status_code") != 1000:
                s.error = f"HTTP {resp.status} {str(doc)[:300]}"
                continue
            s.accepted = done
            m = ACCEPTED.search(str(doc.get("status_message", "")))
            s.fanned_out_to = int(m.group(1)) if m else None

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return sent


async def drain(session: aiohttp.ClientSession, receivers: FanoutReceivers, expected: int, stall: float,
                limit: float) -> int:
    """Wait until the receivers have answered ``expected`` broadcast PUTs in all, or nothing arrived for
    ``stall`` seconds, or ``limit`` seconds passed; returns the count seen."""
    deadline = time.monotonic() + limit
    seen, progress = -1, time.monotonic()
    while True:
        now_seen = await receivers.delivered(session)
        now = time.monotonic()
        if now_seen != seen:
            seen, progress = now_seen, now
        if seen >= expected or now - progress > stall or now > deadline:
            return seen
        await asyncio.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    """Nearest rank on the sorted values (p99 of 500 values is the 5th largest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * p / 100) - 1))]


def analyse(sent: list[Sent], arrivals: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """The figures of one measured run (``sent`` holds only measured broadcasts; warm-up ids are ignored)."""
    accepted = [s for s in sent if s.accepted is not None]
    receivers = len(arrivals)
    missing, duplicates, arrived = 0, 0, 0
    missing_examples: list[str] = []
    last_ms: list[float] = []
    first_ms: list[float] = []
    last_arrival = 0.0
    for s in accepted:
        assert s.accepted is not None
        firsts = []
        for pid, by_id in arrivals.items():
            times = by_id.get(s.id, [])
            arrived += len(times)
            duplicates += max(0, len(times) - 1)
            if not times:
                missing += 1
                if len(missing_examples) < 5:
                    missing_examples.append(f"{s.id} -> DE/{pid}")
                continue
            firsts.append(min(times))
            last_arrival = max(last_arrival, max(times))
        if len(firsts) == receivers:  # latency only of broadcasts that reached everyone
            last_ms.append((max(firsts) - s.accepted) * 1000)
            first_ms.append((min(firsts) - s.accepted) * 1000)
    first_start = min((s.started for s in sent if s.started), default=0.0)
    first_accept = min((s.accepted for s in accepted if s.accepted is not None), default=0.0)
    last_accept = max((s.accepted for s in accepted if s.accepted is not None), default=0.0)
    accept_window = last_accept - first_start
    delivery_window = last_arrival - first_accept
    fanout = sorted({s.fanned_out_to for s in accepted}, key=lambda n: -1 if n is None else n)
    known = {s.id for s in sent}
    unexpected = sum(len(times) for by_id in arrivals.values() for i, times in by_id.items()
                     if i not in known and not i.startswith("BCWARM"))
    return {
        "broadcasts": len(sent), "accepted": len(accepted), "send_errors": len(sent) - len(accepted),
        "send_error_examples": [f"{s.id}: {s.error}" for s in sent if s.error][:5],
        "receivers": receivers, "hub_fanned_out_to": fanout,
        "expected_deliveries": len(accepted) * receivers, "deliveries": len(accepted) * receivers - missing,
        "arrivals": arrived, "missing": missing, "missing_examples": missing_examples, "duplicates": duplicates,
        "unexpected": unexpected,
        "accepted_per_s": round(len(accepted) / accept_window, 1) if accept_window > 0 else None,
        "deliveries_per_s": round(arrived / delivery_window, 1) if delivery_window > 0 else None,
        "accept_window_s": round(accept_window, 3), "delivery_window_s": round(delivery_window, 3),
        "latency_last_ms": summary(last_ms), "latency_first_ms": summary(first_ms),
        "answer_ms": summary([((s.accepted or 0) - s.started) * 1000 for s in accepted]),
    }


def summary(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": round(percentile(ms, 50), 2), "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2)}


@dataclass
class Config:
    broadcasts: int = 500
    concurrency: int = 8
    rate: float = 100.0
    receivers: int = 10
    warmup: int = 30
    stall_s: float = 10.0  # give up waiting when no delivery arrived for this long
    drain_limit_s: float = 60.0


async def run(cfg: Config, session: aiohttp.ClientSession, hub_url: str, sender: onboard.Registration,
              receivers: FanoutReceivers, procs: dict[str, Child], redis_url: str | None) -> dict[str, Any]:
    """Warm-up (unmeasured, drained), then the measured broadcasts; figures, CPU and the hub's queues."""
    base_url = sender.hub_endpoints[("locations", "RECEIVER")] + f"/{OWNER[0]}/{OWNER[1]}"
    base_url = f"{hub_url}{urlsplit(base_url).path}"
    n = cfg.receivers
    warm = [f"BCWARM{i:05d}" for i in range(cfg.warmup)]
    if warm:
        ws = await send_all(base_url, sender.auth, warm, cfg.concurrency, 0)
        bad = [s for s in ws if s.accepted is None]
        if bad:
            raise RuntimeError(f"broadcast warm-up refused: {bad[0].id}: {bad[0].error}")
        if await drain(session, receivers, len(warm) * n, cfg.stall_s, cfg.drain_limit_s) < len(warm) * n:
            raise RuntimeError("broadcast warm-up: not every receiver got every broadcast")
    before = await receivers.delivered(session)
    ids = [f"BC{i:06d}" for i in range(cfg.broadcasts)]
    cpu0 = {k: cpu_seconds(c.pid) for k, c in procs.items()}
    cpu0["bench (sender)"] = cpu_seconds(os.getpid())
    redis0 = hubproc.redis_info(redis_url)["cpu_s"] if redis_url else 0.0
    busy0, total0 = machine_jiffies()
    t0 = time.monotonic()
    sent = await send_all(base_url, sender.auth, ids, cfg.concurrency, cfg.rate)
    expected = before + sum(1 for s in sent if s.accepted is not None) * n
    await drain(session, receivers, expected, cfg.stall_s, cfg.drain_limit_s)
    wall = time.monotonic() - t0
    busy1, total1 = machine_jiffies()
    cpu = {k: round(100 * (cpu_seconds(c.pid) - cpu0[k]) / wall, 1) for k, c in procs.items()}
    cpu["bench (sender)"] = round(100 * (cpu_seconds(os.getpid()) - cpu0["bench (sender)"]) / wall, 1)
    if redis_url:
        cpu["redis"] = round(100 * (hubproc.redis_info(redis_url)["cpu_s"] - redis0) / wall, 1)
    machine = 100 * (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)
    cpu["other"] = round(max(0.0, machine - sum(cpu.values())), 1)
    cpu["machine"] = round(machine, 1)
    await asyncio.sleep(0.5)  # a late duplicate still counts
    result = analyse(sent, await receivers.arrivals(session))
    result.update({"concurrency": cfg.concurrency, "rate_per_s": cfg.rate or None, "warmup_broadcasts": cfg.warmup,
                   "wall_s": round(wall, 3), "cpu_pct_of_one_core": cpu,
                   "hub_queues": await hub_queues(session, hub_url)})
    return result


async def hub_queues(session: aiohttp.ClientSession, hub_url: str) -> dict[str, int]:
    """What the hub still holds for any receiver: queued, in flight, dead letters, and store-and-forward messages
    waiting for a retry (all 0 after a clean run)."""
    admin = {"Authorization": f"Bearer {hubproc.ADMIN_TOKEN}"}
    async with session.get(f"{hub_url}/admin/queues", headers=admin) as resp:
        resp.raise_for_status()
        rows = await resp.json()
    held = {k: sum(int(r.get(k, 0)) for r in rows) for k in ("depth", "inflight", "dead_letters")}
    held["waiting"] = sum(int(m["waiting"]) for r in rows for m in r.get("store_and_forward", []))
    return held


def problems(result: dict[str, Any]) -> list[str]:
    """Why the fan-out run failed, if it did: every accepted broadcast must reach every receiver."""
    out = []
    if result["send_errors"]:
        out.append(f"{result['send_errors']} broadcasts were not answered 1000: "
                   + "; ".join(result["send_error_examples"]))
    if result["hub_fanned_out_to"] != [result["receivers"]]:
        out.append(f"the hub fanned out to {result['hub_fanned_out_to']} receivers, expected "
                   f"[{result['receivers']}]")
    if result["unexpected"]:
        out.append(f"{result['unexpected']} deliveries of broadcasts that were never sent")
    if result["missing"]:
        out.append(f"{result['missing']} deliveries missing (e.g. {', '.join(result['missing_examples'])}); "
                   f"hub queues: {result['hub_queues']}")
    return out
