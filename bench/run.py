"""``make bench``: routed OCPI GETs and PUTs through one hub process vs a bare aiohttp proxy, same load;
then broadcast fan-out from one CPO to ten eMSPs through the same hub.

One run starts a fast fake receiver, the hub (real Redis when it answers, else embedded) and the bare proxy,
registers a sender and the receiver through the admin API and the credentials handshake, then drives wrk at
fixed concurrency against hub and proxy in turn (GET hub, GET bare, PUT hub, PUT bare: neighbours in time
see the same machine) and prints req/s, p50/p99 and errors side by side. Then ten recording eMSP receivers
register and the CPO sends broadcast pushes (TO = the hub); see ``fanout.py``. Everything listens on
loopback, every child is stopped in ``finally`` and the hub's Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import fanout
import hubproc
import loadgen
import measure
import onboard
import pyspy
import report
from common import HERE, LOOPBACK, Child, free_port, python_argv, wait_http
from loadgen import Load

# The speed target of a routed request against the bare proxy (docs/architecture.md, "Cost of a routed request").
TARGETS = {"GET": 0.75, "PUT": 0.70}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="hub vs bare aiohttp proxy, routed locations GET and PUT")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load before each scenario")
    p.add_argument("--rounds", type=int, default=1, help="repeat all scenarios; the median-req/s round is shown")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads (2 cores: keep 1)")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--embedded", action="store_true", help="run the hub on fakeredis even if Redis answers")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="fail above this share of errors")
    p.add_argument("--profile", action="store_true",
                   help="after the hub scenarios, extra runs sampled by py-spy (bench/results/profile-*.txt)")
    p.add_argument("--hub-src", type=Path, help="benchmark the hub of another checkout (A/B), not this one")
    p.add_argument("--no-bridged", dest="bridged", action="store_false",
                   help="skip the PUT a 2.3.0 CPO sends to a 2.2.1 eMSP (translated by the hub)")
    p.add_argument("--no-stored", dest="stored", action="store_false",
                   help="skip the PUT to a receiver that opted in for store-and-forward")
    p.add_argument("--agreements", action="store_true",
                   help="also run the routed GET through a second hub with HUB_ROAMING_POLICY=agreements and an "
                        "agreement between the sender and receiver parties, and report its cost against the open hub")
    p.add_argument("--request-ids", choices=("sequential", "random"), default="sequential",
                   help="X-Request-ID and X-Correlation-ID of the load: a run token and a counter, or a random UUID "
                        "each as platforms send them (the audit's indexes on the SQLite store cost more; "
                        "bench/README.md)")
    p.add_argument("--time-limit", type=float, default=900.0, help="hard bound on the whole run, seconds")
    p.add_argument("--json", type=Path, help="write the results here instead of bench/results/latest.json")
    b = p.add_argument_group("broadcast fan-out (after the table above)")
    b.add_argument("--broadcasts", type=int, default=500, help="measured broadcast pushes; 0 skips the fan-out")
    b.add_argument("--broadcast-concurrency", type=int, default=8, help="broadcasts in flight at most")
    b.add_argument("--broadcast-rate", type=float, default=100.0,
                   help="broadcasts started per second (0: as fast as the concurrency allows)")
    b.add_argument("--broadcast-receivers", type=int, default=10, help="eMSP platforms, one party each")
    b.add_argument("--broadcast-warmup", type=int, default=30, help="unmeasured broadcasts first")
    b.add_argument("--broadcast-only", action="store_true", help="skip the hub vs bare scenarios")
    return p.parse_args(argv)


def git_commit() -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=HERE.parent, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def loads(sender: onboard.Registration) -> list[Load]:
    """GET: eMSP asks the CPO for a Location (SENDER). PUT: CPO pushes its Location to the eMSP (RECEIVER)."""
    get_path = urlsplit(sender.hub_endpoints[("locations", "SENDER")]).path
    put_path = urlsplit(sender.hub_endpoints[("locations", "RECEIVER")]).path + "/NL/CPA"
    return [Load("GET", get_path, sender.auth, from_=("DE", "EMA"), to=("NL", "CPR")),
            Load("PUT", put_path, sender.auth, from_=("NL", "CPA"), to=("DE", "EMR"), owner=("NL", "CPA"))]


def bridged_load(sender: onboard.Registration) -> Load:
    """The same PUT from a CPO registered in OCPI 2.3.0 to the 2.2.1 eMSP: the hub translates each body."""
    put_path = urlsplit(sender.hub_endpoints[("locations", "RECEIVER")]).path + "/NL/CPB"
    return Load("PUT", put_path, sender.auth, from_=("NL", "CPB"), to=("DE", "EMR"), owner=("NL", "CPB"),
                label=report.BRIDGED)


def stored_load(sender: onboard.Registration) -> Load:
    """The same PUT to an eMSP that opted in for store-and-forward of locations: answered once queued, delivered
    in the background (docs/store-and-forward.md)."""
    put_path = urlsplit(sender.hub_endpoints[("locations", "RECEIVER")]).path + "/NL/CPA"
    return Load("PUT", put_path, sender.auth, from_=("NL", "CPA"), to=("DE", "EMS"),
                owner=("NL", "CPA"), label=report.STORED)


class Bench:
    """One benchmark run: its children, temp dir and results; ``close`` undoes everything it started."""

    def __init__(self, args: argparse.Namespace, wrk: str | None, tmp: Path) -> None:
        self.args, self.wrk, self.tmp = args, wrk, tmp
        self.children: list[Child] = []
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        self.sender = onboard.SenderPlatform()
        self.redis_url: str | None = None
        self.prefix = hubproc.new_prefix()
        self.agreements_prefix = hubproc.new_prefix()
        self.rows: list[report.Measured] = []
        self.receiver_url = ""
        self.hub_url = ""
        self.hub: Child | None = None
        self.recv: onboard.Registration | None = None
        self.sender_reg: onboard.Registration | None = None
        # The throughput scenarios' receiving platforms: suspended before the fan-out, whose audience is its own ten
        self.scenario_receivers: list[str] = []
        self.broadcast: dict[str, Any] | None = None

    async def spawn(self, child: Child, ready_url: str) -> Child:
        self.children.append(child)
        await child.start()
        await wait_http(ready_url, 30, child)
        return child

    async def received(self) -> int:
        async with self.session.get(f"{self.receiver_url}/stats") as resp:
            return sum((await resp.json()).values())

    async def load(self, load: Load, origin: str, duration: float) -> loadgen.Result:
        a = self.args
        return await loadgen.run(load, origin, wrk=self.wrk, connections=a.connections, threads=a.threads,
                                 duration=duration, request_ids=a.request_ids)

    async def start(self) -> list[measure.Scenario]:
        """Receiver, hub (registered partners) and bare proxy up; the scenarios to measure."""
        receiver_port, token_b = free_port(), "B-recv-" + os.urandom(8).hex()
        self.receiver_url = f"http://{LOOPBACK}:{receiver_port}"
        receiver = await self.spawn(Child("receiver", python_argv("receiver.py", str(receiver_port), token_b),
                                          self.tmp), f"{self.receiver_url}/healthz")
        await self.sender.start()
        if not self.args.embedded and hubproc.redis_available():
            self.redis_url = hubproc.REDIS_URL
        hub_port, proxy_port = free_port(), free_port()
        hub_url, proxy_url = f"http://{LOOPBACK}:{hub_port}", f"http://{LOOPBACK}:{proxy_port}"
        hub_child = hubproc.hub_child(hub_port, self.tmp, self.redis_url, self.prefix, self.args.hub_src,
                                      python=getattr(self.args, "hub_python", None))
        hub = await self.spawn(hub_child, f"{hub_url}/healthz")
        self.hub, self.hub_url = hub, hub_url
        recv = await onboard.connect(self.session, hub_url, hubproc.ADMIN_TOKEN, "Bench Receiver",
                                     onboard.RECEIVER_PARTIES, f"{self.receiver_url}/ocpi/versions", token_b)
        sender = await onboard.connect(self.session, hub_url, hubproc.ADMIN_TOKEN, "Bench Sender",
                                       onboard.SENDER_PARTIES, self.sender.versions_url, self.sender.token_b)
        sender_230 = None
        if self.args.bridged:
            sender_230 = await onboard.connect(self.session, hub_url, hubproc.ADMIN_TOKEN, "Bench Sender 2.3.0",
                                               onboard.SENDER_230_PARTIES, self.sender.versions_url,
                                               self.sender.token_b_230, version="2.3.0")
        print(f"registered {recv.name} ({recv.platform_id}) and {sender.name} ({sender.platform_id})", flush=True)
        self.recv, self.sender_reg = recv, sender
        self.scenario_receivers.append(recv.platform_id)
        bare = await self.spawn(Child("bare_proxy", python_argv("bare_proxy.py", str(proxy_port),
                                                                self.receiver_url), self.tmp),
                                f"{proxy_url}/healthz")
        procs = {"hub": hub, "bare": bare, "receiver": receiver}
        scenarios = [measure.Scenario(target, origin, load, procs, self.redis_url)
                     for load in loads(sender) for target, origin in (("hub", hub_url), ("bare", proxy_url))]
        if self.args.agreements:  # right after the open hub's GET: neighbours in time see the same machine
            scenarios.insert(1, await self.agreements_scenario(token_b, receiver, bare))
        if sender_230 is not None:  # hub only: a bare proxy does not translate
            scenarios.append(measure.Scenario("hub", hub_url, bridged_load(sender_230), procs, self.redis_url))
        if self.args.stored:  # hub only: store-and-forward next to the synchronous PUT
            stored = await onboard.connect(self.session, hub_url, hubproc.ADMIN_TOKEN, "Bench Stored Receiver",
                                           onboard.STORED_PARTIES, f"{self.receiver_url}/ocpi/versions", token_b)
            self.scenario_receivers.append(stored.platform_id)
            await onboard.store_and_forward(self.session, hub_url, hubproc.ADMIN_TOKEN, stored.platform_id,
                                            ["locations"])
            scenarios.append(measure.Scenario("hub", hub_url, stored_load(sender), procs, self.redis_url))
        return scenarios

    async def drained(self, origin: str, limit: float = 120.0) -> float:
        """Seconds until the hub at ``origin`` holds nothing to deliver (queues empty, nothing in flight, no
        store-and-forward message waiting); a failure past ``limit``."""
        t0 = time.monotonic()
        while True:
            held = await fanout.hub_queues(self.session, origin)
            if not (held["depth"] or held["inflight"] or held["waiting"]):
                return time.monotonic() - t0
            if time.monotonic() - t0 > limit:
                raise RuntimeError(f"the hub still had messages to deliver {limit:g}s after the load: {held}")
            await asyncio.sleep(0.1)

    async def agreements_scenario(self, token_b: str, receiver: Child, bare: Child) -> measure.Scenario:
        """A second hub, under HUB_ROAMING_POLICY=agreements, with the same partners registered and agreements
        between the parties the loads use: every routed request there is checked against them."""
        port = free_port()
        url = f"http://{LOOPBACK}:{port}"
        child = hubproc.hub_child(port, self.tmp / "agreements", self.redis_url, self.agreements_prefix,
                                  self.args.hub_src, name="hub-agreements",
                                  extra_env={"HUB_ROAMING_POLICY": "agreements"})
        hub = await self.spawn(child, f"{url}/healthz")
        await onboard.connect(self.session, url, hubproc.ADMIN_TOKEN, "Bench Receiver", onboard.RECEIVER_PARTIES,
                              f"{self.receiver_url}/ocpi/versions", token_b)
        sender = await onboard.connect(self.session, url, hubproc.ADMIN_TOKEN, "Bench Sender",
                                       onboard.SENDER_PARTIES, self.sender.versions_url, self.sender.token_b)
        await onboard.agree(self.session, url, hubproc.ADMIN_TOKEN, onboard.AGREEMENTS)
        get = loads(sender)[0]
        load = Load(get.method, get.base_path, get.auth, from_=get.from_, to=get.to, label=report.AGREEMENTS)
        print(f"second hub {url}: HUB_ROAMING_POLICY=agreements, {len(onboard.AGREEMENTS)} agreements", flush=True)
        return measure.Scenario("hub", url, load, {"hub": hub, "bare": bare, "receiver": receiver}, self.redis_url)

    async def run(self) -> None:
        a = self.args
        scenarios = await self.start()
        if a.broadcast_only:
            scenarios = []
        for sc in scenarios:
            await measure.probe(self.session, sc.origin, sc.load)
        for i in range(a.rounds if scenarios else 0):
            for sc in scenarios:
                m = await measure.measure(sc, self.load, self.received, a.duration, a.warmup)
                if sc.load.label == report.STORED:
                    # What was accepted and not yet delivered is delivered now, before the next scenario: measured
                    # during it, that backlog would be charged to a scenario that did not send it
                    m.drain_s = await self.drained(sc.origin)
                self.rows.append(m)
                r = m.result
                print(f"  round {i + 1}/{a.rounds} {m.scenario}: {r.rps:.0f} req/s, p50 {r.latency_ms['p50']:.2f} ms, "
                      f"p99 {r.latency_ms['p99']:.2f} ms, errors {r.errors}", flush=True)
        if a.profile:
            for sc in scenarios:
                if sc.target == "hub":
                    await self.profile(sc)
        if a.broadcasts > 0:
            await self.fan_out()

    async def fan_out(self) -> None:
        """Ten recording eMSPs register; the throughput receivers' platforms are suspended, so their eMSPs (DE/EMR,
        and DE/EMS of the store-and-forward PUT) are no broadcast recipients (the ten are the whole audience); then
        the measured broadcasts."""
        a = self.args
        assert self.hub is not None and self.recv is not None and self.sender_reg is not None
        receivers = fanout.FanoutReceivers(a.broadcast_receivers)
        child = receivers.child_for(self.tmp)
        self.children.append(child)
        await child.start()
        await receivers.wait_ready()
        await receivers.register(self.session, self.hub_url)
        admin = {"Authorization": f"Bearer {hubproc.ADMIN_TOKEN}"}
        for platform_id in self.scenario_receivers:
            async with self.session.post(f"{self.hub_url}/admin/platforms/{platform_id}/suspend",
                                         headers=admin) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"suspending platform {platform_id}: HTTP {resp.status} {await resp.text()}")
        print(f"registered {len(receivers.parties)} eMSP platforms DE/{receivers.parties[0]}..DE/"
              f"{receivers.parties[-1]} on one receiver process; suspended the throughput scenarios' receivers",
              flush=True)
        cfg = fanout.Config(broadcasts=a.broadcasts, concurrency=a.broadcast_concurrency, rate=a.broadcast_rate,
                            receivers=a.broadcast_receivers, warmup=a.broadcast_warmup)
        self.broadcast = await fanout.run(cfg, self.session, self.hub_url, self.sender_reg, receivers,
                                          {"hub": self.hub, "receivers": child}, self.redis_url)
        b = self.broadcast
        print(f"  fan-out: {b['accepted']}/{b['broadcasts']} accepted, {b['deliveries']}/"
              f"{b['expected_deliveries']} delivered, 1000 → last receiver p50 {b['latency_last_ms']['p50']} ms",
              flush=True)

    async def profile(self, sc: measure.Scenario) -> None:
        exe = pyspy.find()
        if exe is None:
            print("  --profile: py-spy not found (pip install py-spy into the venv)", flush=True)
            return
        # One file per scenario: the PUT scenarios (same-version, bridged, stored) share a method.
        name = re.sub(r"[^A-Za-z0-9.]+", "-", sc.name).strip("-")
        raw = self.tmp / f"profile-{name}.raw"
        seconds = self.args.duration
        await asyncio.gather(pyspy.record(exe, sc.procs["hub"].pid, seconds, raw),
                             self.load(sc.load, sc.origin, seconds))
        out = pyspy.save(raw, report.RESULTS, name)
        print(f"  profile of {sc.name}: {out}", flush=True)

    async def close(self) -> None:
        for child in reversed(self.children):
            await child.stop()
        await self.sender.stop()
        await self.session.close()
        if self.redis_url:
            for prefix in (self.prefix, self.agreements_prefix):
                n = hubproc.cleanup_prefix(self.redis_url, prefix)
                if n or prefix == self.prefix:
                    print(f"deleted {n} Redis keys of prefix {{{prefix}}}", flush=True)

    def meta(self) -> dict[str, Any]:
        a = self.args
        redis = hubproc.redis_info(self.redis_url) if self.redis_url else None
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "queues": f"Redis {redis['version']} at {self.redis_url}" if redis else "embedded fakeredis",
            "hub_processes": 1, "hub_src": str(a.hub_src or HERE.parent),
            "connections": a.connections, "threads": a.threads,
            "duration_s": a.duration, "warmup_s": a.warmup, "rounds": a.rounds, "request_ids": a.request_ids,
            "loadgen": "none (--broadcast-only)" if a.broadcast_only else
                       loadgen.wrk_version(self.wrk) if self.wrk else "python aiohttp fallback (bench/pyload.py)",
            "versions": {"python": platform.python_version(), "aiohttp": package_version("aiohttp"),
                         "redis-py": package_version("redis"), "hiredis": package_version("hiredis"),
                         "uvloop": package_version("uvloop"), "ocpi-hub": package_version("ocpi-hub"),
                         "commit": git_commit()},
            "machine": {"cores": os.cpu_count(), "kernel": platform.release()},
        }


def summary(bench: Bench, args: argparse.Namespace) -> int:
    meta = bench.meta()
    shown = report.pick(bench.rows)
    worst = max((m.result.error_rate for m in bench.rows), default=0.0)
    failures = fanout.problems(bench.broadcast) if bench.broadcast else []
    if worst > args.max_error_rate:
        failures.insert(0, f"error rate {worst:.2%} is above {args.max_error_rate:.0%}")
    path = report.write_json(bench.rows, shown, meta, not failures, bench.broadcast, args.json)
    if shown:
        print(f"\nmeasured: one hub process, queues on {meta['queues']}; load {meta['loadgen']}, "
              f"-t{args.threads} -c{args.connections}, {args.warmup:g}s warm-up + {args.duration:g}s per "
              f"scenario, {args.rounds} round(s)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "\n")
    if shown:
        print(report.render(shown, meta))
        for line in report.render_round_ratios(bench.rows):
            print(line)
        ratios = report.ratios(shown)
        print()
        for method, target in TARGETS.items():
            if (ratio := ratios.get(method)) is not None:
                print(f"target hub/bare {method} >= {target:.2f}: {'met' if ratio >= target else 'NOT met'} "
                      f"({ratio:.2f}; the target is judged on the median of --rounds 3)")
    if bench.broadcast:
        print("\n" + report.render_broadcast(bench.broadcast))
    print(f"results: {path}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


class Run(Protocol):
    @property
    def children(self) -> list[Child]: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


async def run_bounded(bench: Run, time_limit: float) -> None:
    """``bench.run()`` within ``time_limit``, cancelled by SIGINT/SIGTERM; on failure the children's last log lines;
    ``bench.close()`` (every child stopped) whatever happens. Shared with ``scale.py``."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        async with asyncio.timeout(time_limit):
            await bench.run()
    except Exception:
        for child in bench.children:
            print(f"--- last lines of {child.name} log ---\n{child.log_tail()}", file=sys.stderr)
        raise
    finally:
        await bench.close()


async def main_async(args: argparse.Namespace, wrk: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="ocpi-bench-") as tmp:
        bench = Bench(args, wrk, Path(tmp))
        await run_bounded(bench, args.time_limit)
    return summary(bench, args)


def launch(args: argparse.Namespace, main_async: Callable[[argparse.Namespace, str | None], Awaitable[int]],
           want_wrk: bool) -> int:
    """Find (or install) wrk unless the run needs none, run ``main_async``, and turn Ctrl-C and ``--time-limit``
    into exit codes; shared with ``scale.py``."""
    wrk = None
    if args.loadgen != "python" and want_wrk:
        wrk = loadgen.ensure_wrk()
        if wrk is None and args.loadgen == "wrk":
            print("wrk is not available and could not be installed", file=sys.stderr)
            return 2
        if wrk is None:
            print("WARNING: wrk unavailable; falling back to the slower Python load generator", file=sys.stderr)
    try:
        return asyncio.run(main_async(args, wrk))
    except asyncio.CancelledError:
        print("interrupted: every process the bench started is stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"FAILED: the run exceeded --time-limit {args.time_limit:g}s; everything was stopped", file=sys.stderr)
        return 1


def main() -> int:
    args = parse_args()
    return launch(args, main_async, not args.broadcast_only)


if __name__ == "__main__":
    sys.exit(main())
