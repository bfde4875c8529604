"""Two hubs side by side, loaded in turn: an A/B comparison that holds up on a host whose speed drifts.

Two separate ``run.py`` runs minutes apart compare two states of the host as much as two hubs: on the shared
2-core machine identical builds differ by 10-30 % from one run to the next. Here both sides are up at once, each
a ``run.py`` bench of its own (receiver, hub, bare proxy; the bare proxy is not loaded), and every turn loads side
A's hub and then side B's (B first on every other turn) with the same GET and PUT for ``--duration`` seconds each,
after a 1 s warm-up. What is reported per method:

- each side's req/s (median of the turns) and B/A turn by turn, with its median: neighbours in time see the same
  machine, so the turn-by-turn ratio is the figure to read;
- each hub's CPU per request on its event loop and on its other threads (the SQLite store's audit writer), from
  ``/proc/<pid>/task``: steadier than req/s, and it shows where a change moved the work.

A side is a checkout (``--a-src``/``--b-src``, default this one), the interpreter its hub runs on
(``--a-python``/``--b-python``: a virtualenv's python with the hub's dependencies, default this one's) and the
request ids its load sends (``--a-ids``/``--b-ids``, see ``run.py --request-ids``). docs/architecture.md,
"Request ids as platforms send them", was measured this way: ``python bench/ab.py --b-ids random --turns 10
--duration 4``.

Usage: python bench/ab.py [--a-src DIR] [--b-src DIR] [--a-python PY] [--b-python PY]
       [--a-ids sequential|random] [--b-ids ...] [--turns 10]
       [--duration 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import measure
import run as benchrun
from common import HERE, Child, thread_cpu_seconds

METHODS = ("GET", "PUT")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="two hubs side by side, loaded in turn (A/B)")
    for side in ("a", "b"):
        p.add_argument(f"--{side}-src", type=Path, help=f"side {side.upper()}'s checkout (default: this one)")
        p.add_argument(f"--{side}-python", type=Path,
                       help=f"side {side.upper()}'s hub interpreter: a virtualenv's python with the hub's "
                            "dependencies (default: this one's)")
        p.add_argument(f"--{side}-ids", choices=("sequential", "random"), default="sequential",
                       help=f"side {side.upper()}'s request ids (run.py --request-ids)")
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--duration", type=float, default=4.0, help="seconds each hub is loaded per method and turn")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--time-limit", type=float, default=1800.0, help="hard bound on the whole run, seconds")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


@dataclass
class Side:
    """One side: its bench, its hub's scenarios by method, and what each turn measured."""

    name: str
    bench: benchrun.Bench
    scenarios: dict[str, measure.Scenario] = field(default_factory=dict)
    rps: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METHODS})
    loop_us: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METHODS})
    other_us: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METHODS})

    async def turn(self, method: str, duration: float) -> None:
        sc = self.scenarios[method]
        await self.bench.load(sc.load, sc.origin, 1.0)  # warm-up
        pid = sc.procs["hub"].pid
        before = thread_cpu_seconds(pid)
        result = await self.bench.load(sc.load, sc.origin, duration)
        after = thread_cpu_seconds(pid)
        if result.errors:
            raise RuntimeError(f"side {self.name} {method}: {result.errors} errors of {result.requests}")
        n = max(result.requests, 1)
        self.rps[method].append(result.rps)
        self.loop_us[method].append(1e6 * (after.get(pid, 0.0) - before.get(pid, 0.0)) / n)
        self.other_us[method].append(1e6 * sum(v - before.get(t, 0.0) for t, v in after.items() if t != pid) / n)


class AB:
    """Both sides up, then the turns; ``close`` stops every child of both (``run.run_bounded``'s contract)."""

    def __init__(self, args: argparse.Namespace, wrk: str | None, tmp: Path) -> None:
        self.args = args
        self.sides: list[Side] = []
        for name in ("A", "B"):
            side_args = benchrun.parse_args(["--no-bridged", "--no-stored", "--broadcasts", "0",
                                             "--connections", str(args.connections)])
            side_args.hub_src = getattr(args, f"{name.lower()}_src")
            side_args.request_ids = getattr(args, f"{name.lower()}_ids")
            side_args.hub_python = getattr(args, f"{name.lower()}_python")
            folder = tmp / name
            folder.mkdir()
            self.sides.append(Side(name, benchrun.Bench(side_args, wrk, folder)))

    @property
    def children(self) -> list[Child]:
        return [c for side in self.sides for c in side.bench.children]

    async def run(self) -> None:
        for side in self.sides:
            for sc in await side.bench.start():
                if sc.target == "hub":
                    side.scenarios[sc.load.method] = sc
                    await measure.probe(side.bench.session, sc.origin, sc.load)
        for turn in range(self.args.turns):
            order = self.sides if turn % 2 == 0 else self.sides[::-1]
            for side in order:
                for method in METHODS:
                    await side.turn(method, self.args.duration)
            a, b = self.sides
            print(f"turn {turn + 1}/{self.args.turns}: " + ", ".join(
                f"{m} A {a.rps[m][-1]:.0f} B {b.rps[m][-1]:.0f} req/s" for m in METHODS), flush=True)

    async def close(self) -> None:
        for side in self.sides:
            await side.bench.close()

    def figures(self) -> dict[str, Any]:
        a, b = self.sides
        out: dict[str, Any] = {"sides": {s.name: {"src": str(s.bench.args.hub_src or HERE.parent),
                                                  "python": str(s.bench.args.hub_python or sys.executable),
                                                  "request_ids": s.bench.args.request_ids} for s in self.sides},
                               "turns": self.args.turns, "duration_s": self.args.duration, "methods": {}}
        for m in METHODS:
            ratios = [y / x for x, y in zip(a.rps[m], b.rps[m], strict=True) if x]
            out["methods"][m] = {
                "b_over_a_by_turn": [round(r, 3) for r in ratios],
                "b_over_a_median": round(statistics.median(ratios), 3) if ratios else None,
                **{s.name: {"rps_median": round(statistics.median(s.rps[m]), 1) if s.rps[m] else None,
                            "event_loop_cpu_us_per_request": _median(s.loop_us[m]),
                            "other_threads_cpu_us_per_request": _median(s.other_us[m])} for s in self.sides},
            }
        return out


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def render(fig: dict[str, Any]) -> str:
    sides = fig["sides"]
    lines = [f"A: {sides['A']['src']} on {sides['A']['python']} ({sides['A']['request_ids']} ids); "
             f"B: {sides['B']['src']} on {sides['B']['python']} ({sides['B']['request_ids']} ids); "
             f"{fig['turns']} turns of {fig['duration_s']:g} s per hub and method"]
    for m, f in fig["methods"].items():
        lines.append(f"{m}: B/A {f['b_over_a_median']} (median of turns: "
                     f"{', '.join(f'{r:.2f}' for r in f['b_over_a_by_turn'])})")
        for name in ("A", "B"):
            s = f[name]
            lines.append(f"  {name}: {s['rps_median']} req/s; CPU per request: event loop "
                         f"{s['event_loop_cpu_us_per_request']} µs, other threads (audit writer) "
                         f"{s['other_threads_cpu_us_per_request']} µs")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, wrk: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="ocpi-bench-ab-") as tmp:
        ab = AB(args, wrk, Path(tmp))
        await benchrun.run_bounded(ab, args.time_limit)
    fig = ab.figures()
    print("\n" + render(fig))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return benchrun.launch(parse_args(argv), main_async, want_wrk=True)


if __name__ == "__main__":
    sys.exit(main())
