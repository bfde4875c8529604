"""``make bench-scale``: how the hub's cost grows with work, in one run, on loopback, with the real Redis.

1. Routed GET (the eMSP DE/EMA asks the CPO NL/CPR for a Location, as ``run.py``'s GET) through hubs holding
   1, 100, 1,000 and 10,000 receiver platforms (plus the sender): req/s, p50/p99, the hub's CPU per request and
   its RSS, for that one pair ("1 pair") and for requests cycling through many callers and receivers ("spread":
   up to ``--spread`` platforms, each its own caller token, receiver URL and loopback port).
2. GET All: Locations broadcast TO the hub, then an eMSP walks the hub's pages following ``Link``.
3. ``ocpi-hub serve --workers 2`` against ``--workers 1``, to one receiver and to many.

Every hub is a real ``ocpi-hub serve`` subprocess with its own SQLite file and Redis key prefix (deleted
afterwards). The sender and the hot receiver register through the admin API and the credentials handshake, and
so do the first ``--handshakes`` partners of each hub (timed); the other partners are written into the store
before the hub starts (``preload.py``). Every child is stopped in ``finally``; ``--time-limit`` bounds the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import getall
import hubproc
import loadgen
import measure
import onboard
import preload
import proctree
import pyspy
import report
import scale_report
from common import LOOPBACK, Child, cpu_seconds, free_port, ocpi_token, python_argv, wait_http
from cryptography.fernet import Fernet
from loadgen import Load
from run import git_commit, launch, package_version, run_bounded
from scale_report import ONE, SPREAD, Row

HOT_KEY = "hot"  # the scale receiver's path of the hot receiver (NL/CPR, DE/EMR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="hub cost against registered platforms, GET All, workers 2 vs 1")
    p.add_argument("--sizes", default="1,100,1000,10000",
                   help="receiver platforms per hub, comma-separated (the sender is one more)")
    p.add_argument("--spread", type=int, default=10_000,
                   help="partners the spread load cycles through (callers and receivers), at most size - 1")
    p.add_argument("--ports", type=int, default=2500,
                   help="loopback ports of the fake partners (more partners share them, each with its own path)")
    p.add_argument("--handshakes", type=int, default=20,
                   help="partners per hub registered through the admin API and the credentials handshake (timed)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per load")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load before each")
    p.add_argument("--rounds", type=int, default=1, help="measure each load this often; the median is shown")
    p.add_argument("--connections", type=int, default=32, help="wrk connections of the platforms part")
    p.add_argument("--workers-connections", type=int, default=64,
                   help="wrk connections of the workers part (above the per-process in-flight limit of 32)")
    p.add_argument("--workers-size", type=int, default=0, help="receiver platforms there (0: the largest size)")
    p.add_argument("--no-workers", dest="workers", action="store_false", help="skip --workers 2 against 1")
    p.add_argument("--locations", type=int, default=10_000, help="Locations for the GET All walk (0 skips it)")
    p.add_argument("--broadcast-concurrency", type=int, default=16)
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--profile", action="store_true",
                   help="after each load of the platforms part, an extra unreported run sampled by py-spy "
                        "(bench/results/profile-scale-<platforms>-<load>.txt)")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="fail above this share of errors")
    p.add_argument("--time-limit", type=float, default=900.0, help="hard bound on the whole run, seconds")
    p.add_argument("--json", type=Path, default=report.RESULTS / "scale-latest.json", help="results file")
    args = p.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not args.sizes or args.sizes[0] < 1 or args.sizes[-1] > 40_000:
        p.error("--sizes: whole numbers from 1 to 40000")
    return args


class ScaleBench:
    """One run: the receiver process, the hubs one after the other, the rows; ``close`` undoes everything."""

    def __init__(self, args: argparse.Namespace, wrk: str | None, tmp: Path) -> None:
        self.args, self.wrk, self.tmp = args, wrk, tmp
        self.children: list[Child] = []
        self.prefixes: list[str] = []
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.sender = onboard.SenderPlatform()
        self.seed = os.urandom(6).hex()
        self.secret_key = Fernet.generate_key()
        self.templates = preload.Templates(tmp / "template.sqlite3", self.secret_key)
        self.ports: list[int] = []
        self.receiver: Child | None = None
        self.rows: list[Row] = []
        self.all_rounds: list[Row] = []
        self.sizes: list[dict[str, Any]] = []
        self.getall: dict[str, Any] | None = None
        self.route_counts: dict[str, int] = {}  # routes file -> its lines

    # -- processes ------------------------------------------------------------------------------------------
    async def spawn(self, child: Child, ready_url: str) -> Child:
        self.children.append(child)
        await child.start()
        await wait_http(ready_url, 120, child)
        return child

    async def start_receiver(self) -> None:
        a = self.args
        count = 1 + max(1, min(max(a.sizes[-1], a.workers_size) - 1, a.spread, a.ports))
        ports_file = self.tmp / "ports.json"
        child = Child("scale_receiver", python_argv("scale_receiver.py", str(ports_file), self.seed, str(count)),
                      self.tmp)
        self.children.append(child)
        await child.start()
        deadline = time.monotonic() + 120
        while not ports_file.exists():
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"scale receiver did not start\n{child.log_tail()}")
            await asyncio.sleep(0.1)
        self.ports = json.loads(ports_file.read_text())
        self.receiver = child
        await wait_http(self.url(0, "healthz"), 30, child)
        print(f"scale receiver: {len(self.ports)} loopback ports", flush=True)

    def url(self, port_index: int, path: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[port_index]}/{path}"

    def extras(self, count: int) -> list[preload.Extra]:
        """Partner n (1..count) on port 1 + (n - 1) mod (ports - 1); the hot receiver has port 0 to itself."""
        spread_ports = len(self.ports) - 1
        return [preload.Extra(n, self.seed, self.ports[1 + (n - 1) % spread_ports]) for n in range(1, count + 1)]

    async def receiver_stats(self) -> dict[str, int]:
        async with self.session.get(self.url(0, "stats")) as resp:
            stats: dict[str, int] = await resp.json()
            return stats

    async def reset_receiver(self) -> None:
        async with self.session.post(self.url(0, "reset")) as resp:
            await resp.read()

    async def start_hub(self, name: str, data: Path, workers: int) -> tuple[Child, str, float]:
        port = free_port()
        url = f"http://{LOOPBACK}:{port}"
        prefix = hubproc.new_prefix()
        self.prefixes.append(prefix)
        env = {"HUB_SECRET_KEYS": self.secret_key.decode(),
               # Still-alive GETs to every partner silent for 5 minutes are a cost of their own (a 10,000-platform
               # hub pings ~33 a second); kept out of these figures.
               "HUB_ALIVE_INTERVAL": "86400"}
        child = hubproc.hub_child(port, data, hubproc.REDIS_URL, prefix, name=name, extra_env=env, workers=workers)
        started = time.perf_counter()
        await self.spawn(child, f"{url}/healthz")
        return child, url, time.perf_counter() - started

    async def stop_hub(self, hub: Child) -> None:
        await hub.stop()
        self.children.remove(hub)
        n = hubproc.cleanup_prefix(hubproc.REDIS_URL, self.prefixes[-1])
        print(f"  stopped {hub.name}; deleted {n} Redis keys of prefix {{{self.prefixes[-1]}}}", flush=True)

    # -- registration ---------------------------------------------------------------------------------------
    async def register_bench_pair(self, url: str) -> onboard.Registration:
        """The sender (DE/EMA, NL/CPA) and the hot receiver (NL/CPR, DE/EMR), by the credentials handshake."""
        await onboard.connect(self.session, url, hubproc.ADMIN_TOKEN, "Scale Hot Receiver", onboard.RECEIVER_PARTIES,
                              self.url(0, f"{HOT_KEY}/ocpi/versions"), f"B-{self.seed}-{HOT_KEY}")
        return await onboard.connect(self.session, url, hubproc.ADMIN_TOKEN, "Scale Sender", onboard.SENDER_PARTIES,
                                     self.sender.versions_url, self.sender.token_b)

    async def hub_with(self, name: str, receivers: int, workers: int) -> tuple[Child, str, onboard.Registration,
                                                                               dict[int, str]]:
        """A hub holding ``receivers`` receiver platforms and the sender; returns it with every partner's Authorization
        header (by partner number)."""
        a = self.args
        extras = self.extras(receivers - 1)
        shaken = extras[:a.handshakes]
        preloaded = extras[a.handshakes:]
        data = self.tmp / name
        preload_s = await self.templates.copy_with(preloaded, data / "hub.sqlite3")
        hub, url, start_s = await self.start_hub(name, data, workers)
        sender = await self.register_bench_pair(url)
        auth = {e.n: ocpi_token(e.token_c) for e in preloaded}
        started = time.perf_counter()
        for e in shaken:
            reg = await onboard.connect(self.session, url, hubproc.ADMIN_TOKEN, f"Scale partner {e.n}", e.roles(),
                                        e.versions_url, e.token_b)
            auth[e.n] = reg.auth
        shake_s = time.perf_counter() - started
        self.sizes.append({"name": name, "platforms": receivers + 1, "workers": workers, "preloaded": len(preloaded),
                           "preload_s": round(preload_s, 2), "start_s": round(start_s, 2), "handshakes": len(shaken),
                           "handshakes_per_s": round(len(shaken) / shake_s, 1) if shaken else "-"})
        print(f"{name}: {receivers + 1:,} platforms ({len(preloaded):,} preloaded in {preload_s:.1f} s, hub up in "
              f"{start_s:.1f} s, {len(shaken)} handshakes in {shake_s:.1f} s)", flush=True)
        return hub, url, sender, auth

    def loads(self, sender: onboard.Registration, auth: dict[int, str], name: str) -> list[Load]:
        """The one pair, and the spread: partner i's eMSP asks partner (i + S/2) mod S's CPO, i in 0..S-1."""
        path = urlsplit(sender.hub_endpoints[("locations", "SENDER")]).path
        out = [Load("GET", path, sender.auth, from_=("DE", "EMA"), to=("NL", "CPR"), label=ONE)]
        extras = self.extras(min(len(auth), self.args.spread))
        if len(extras) >= 2:
            half = len(extras) // 2
            routes = [(auth[e.n], *e.emsp, *extras[(i + half) % len(extras)].cpo) for i, e in enumerate(extras)]
            routes_file = self.tmp / f"routes-{name}.tsv"
            routes_file.write_text("".join("\t".join(r) + "\n" for r in routes))
            self.route_counts[str(routes_file)] = len(routes)
            first = routes[0]
            out.append(Load("GET", path, first[0], from_=(first[1], first[2]), to=(first[3], first[4]), label=SPREAD,
                            routes_file=str(routes_file)))
        return out

    # -- measuring ------------------------------------------------------------------------------------------
    async def run_load(self, load: Load, origin: str, connections: int, duration: float) -> loadgen.Result:
        return await loadgen.run(load, origin, wrk=self.wrk, connections=connections, threads=1, duration=duration)

    async def measure(self, part: str, hub: Child, origin: str, load: Load, platforms: int, workers: int,
                      connections: int) -> Row:
        a = self.args
        assert self.receiver is not None
        await measure.probe(self.session, origin, load)
        rounds = []
        warmup = a.warmup
        if load.routes_file and self.rows:  # every route once first: first contact with a partner is not the cost
            routes = self.route_counts[load.routes_file]  # of routing to it (connections, metric series)
            warmup = max(warmup, min(30.0, 1.2 * routes / max(self.rows[-1].result.rps, 100.0)))
        for _ in range(a.rounds):
            if warmup > 0:
                await self.run_load(load, origin, connections, warmup)
            await self.reset_receiver()
            avg = proctree.loadavg()
            hub0, recv0 = proctree.cpu(hub.pid), cpu_seconds(self.receiver.pid)
            redis0 = hubproc.redis_info(hubproc.REDIS_URL)["cpu_s"]
            busy0, total0 = measure.machine_jiffies()
            t0 = time.monotonic()
            result = await self.run_load(load, origin, connections, a.duration)
            wall = time.monotonic() - t0
            busy1, total1 = measure.machine_jiffies()
            hub_s = proctree.cpu(hub.pid) - hub0
            cpu = {"hub": hub_s, "receiver": cpu_seconds(self.receiver.pid) - recv0,
                   "redis": hubproc.redis_info(hubproc.REDIS_URL)["cpu_s"] - redis0, "loadgen": result.loadgen_cpu_s}
            pct = {k: round(100 * v / wall, 1) for k, v in cpu.items()}
            machine = 100 * (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)
            pct["other"] = round(max(0.0, machine - sum(pct.values())), 1)
            pct["machine"] = round(machine, 1)
            stats = await self.receiver_stats()
            row = Row(part, platforms, workers, load.name, connections, result, hub_s, pct,
                      proctree.rss_mb(hub.pid), stats.get("partners", 0), avg)
            rounds.append(row)
            r = result
            print(f"  {part} {platforms:,} w{workers} {load.name}: {r.rps:.0f} req/s, p50 {r.latency_ms['p50']:.2f} "
                  f"ms, p99 {r.latency_ms['p99']:.2f} ms, {row.cpu_us_per_request:.0f} µs CPU/req, RSS "
                  f"{row.rss_mb:.0f} MB, {row.receivers:,} receivers, errors {r.errors}, load {avg}", flush=True)
        self.all_rounds += rounds
        shown = scale_report.median(rounds)
        self.rows.append(shown)
        return shown

    async def profile(self, hub: Child, origin: str, load: Load, name: str) -> None:
        exe = pyspy.find()
        if exe is None:
            print("  --profile: py-spy not found (pip install py-spy into the venv)", flush=True)
            return
        raw = self.tmp / f"{name}.raw"
        seconds = self.args.duration
        await asyncio.gather(pyspy.record(exe, hub.pid, seconds, raw),
                             self.run_load(load, origin, self.args.connections, seconds))
        print(f"  profile: {pyspy.save(raw, report.RESULTS, name)}", flush=True)

    # -- the three parts --------------------------------------------------------------------------------------
    async def platforms_part(self) -> None:
        for size in self.args.sizes:
            name = f"size-{size}"
            hub, url, sender, auth = await self.hub_with(name, size, 1)
            try:
                for load in self.loads(sender, auth, name):
                    await self.measure("platforms", hub, url, load, size + 1, 1, self.args.connections)
                    if self.args.profile:
                        await self.profile(hub, url, load, f"scale-{size + 1}-{load.name.replace(' ', '-')}")
            finally:
                await self.stop_hub(hub)

    async def workers_part(self) -> None:
        a = self.args
        size = a.workers_size or a.sizes[-1]
        for workers in (1, 2):
            name = f"workers-{workers}"
            hub, url, sender, auth = await self.hub_with(name, size, workers)
            try:
                for load in self.loads(sender, auth, name):
                    await self.measure("workers", hub, url, load, size + 1, workers, a.workers_connections)
            finally:
                await self.stop_hub(hub)

    async def getall_part(self) -> None:
        """On a hub of its own (the sender and the hot receiver only: the hot receiver's eMSP is the one recipient
        of each broadcast), so the fan-out is one delivery per Location."""
        count = self.args.locations
        hub, _, sender, _ = await self.hub_with("getall", 1, 1)
        try:
            await self.reset_receiver()
            bc = await getall.broadcast(sender, count, self.args.broadcast_concurrency)

            async def puts() -> int:
                return (await self.receiver_stats()).get("PUT", 0)

            delivered = await getall.wait_delivered(puts, bc["accepted"])
            walk = await getall.walk(self.session, sender, count)
            self.getall = {"broadcast": bc, "delivered": delivered, "walk": walk}
            print(f"  GET All: {walk['items']:,} items in {walk['pages']} pages, {walk['seconds']:.2f} s "
                  f"({'OK' if walk['ok'] else 'WRONG COUNT'})", flush=True)
        finally:
            await self.stop_hub(hub)

    async def run(self) -> None:
        if not hubproc.redis_available():
            raise RuntimeError(f"no Redis answers at {hubproc.REDIS_URL}: the scale bench needs the real one")
        await self.sender.start()  # its port was picked when it was made: bound before the receiver binds thousands
        await self.start_receiver()
        await self.platforms_part()
        if self.args.locations > 0:
            await self.getall_part()
        if self.args.workers:
            await self.workers_part()

    async def close(self) -> None:
        for child in reversed(self.children):
            await child.stop()
        await self.sender.stop()
        await self.session.close()
        for prefix in self.prefixes:
            hubproc.cleanup_prefix(hubproc.REDIS_URL, prefix)

    def meta(self, started_load: str) -> dict[str, Any]:
        a = self.args
        redis = hubproc.redis_info(hubproc.REDIS_URL)
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
            "loadavg_at_start": started_load, "loadavg_at_end": proctree.loadavg(),
            "queues": f"Redis {redis['version']} at {hubproc.REDIS_URL}", "sizes": a.sizes, "spread": a.spread,
            "handshakes": a.handshakes, "connections": a.connections, "workers_connections": a.workers_connections,
            "duration_s": a.duration, "warmup_s": a.warmup, "rounds": a.rounds,
            "loadgen": loadgen.wrk_version(self.wrk) if self.wrk else "python aiohttp fallback (bench/pyload.py)",
            "versions": {"python": platform.python_version(), "aiohttp": package_version("aiohttp"),
                         "ocpi-hub": package_version("ocpi-hub"), "commit": git_commit()},
            "machine": {"cores": os.cpu_count(), "kernel": platform.release()},
        }


def problems(bench: ScaleBench, args: argparse.Namespace) -> list[str]:
    out = []
    worst = max((m.result.error_rate for m in bench.all_rounds), default=0.0)
    if worst > args.max_error_rate:
        out.append(f"error rate {worst:.2%} is above {args.max_error_rate:.0%}")
    if bench.getall is not None and not bench.getall["walk"]["ok"]:
        w = bench.getall["walk"]
        out.append(f"GET All walk returned {w['items']} items ({w['distinct']} distinct), expected {w['expected']}")
    reachable = min(args.sizes[-1] - 1, args.spread)
    if reachable > 1024 and not any(m.receivers > 1024 for m in bench.rows):
        out.append("no load reached more than 1,024 distinct receivers")
    return out


async def main_async(args: argparse.Namespace, wrk: str | None) -> int:
    started_load = proctree.loadavg()
    with tempfile.TemporaryDirectory(prefix="ocpi-bench-scale-") as tmp:
        bench = ScaleBench(args, wrk, Path(tmp))
        await run_bounded(bench, args.time_limit)
    meta = bench.meta(started_load)
    failures = problems(bench, args)
    path = scale_report.write_json(args.json, bench.rows, bench.all_rounds, bench.sizes, bench.getall, meta,
                                   not failures)
    print(f"\nmeasured: {meta['command']}; queues on {meta['queues']}; load {meta['loadgen']}, "
          f"{args.warmup:g}s warm-up + {args.duration:g}s per load, {args.rounds} round(s); load average "
          f"{meta['loadavg_at_start']} at start, {meta['loadavg_at_end']} at the end\n")
    print(scale_report.render(bench.rows, bench.sizes, bench.getall, meta))
    print(f"results: {path}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return launch(parse_args(argv), main_async, want_wrk=True)


if __name__ == "__main__":
    sys.exit(main())
