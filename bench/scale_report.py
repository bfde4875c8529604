"""``scale.py``'s output: one table for people, ``bench/results/scale-latest.json`` for tools."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import Result

ONE, SPREAD = "1 pair", "spread"


@dataclass
class Row:
    """One measured load against one hub: throughput, latency, and what it cost the hub."""

    part: str  # "platforms" (cost against registered platforms) | "workers" (--workers 2 against 1)
    platforms: int  # registered in the hub, the sender included
    workers: int
    load: str  # ONE | SPREAD
    connections: int
    result: Result
    hub_cpu_s: float  # CPU of the hub's processes (supervisor and workers) during the measured run
    cpu_pct: dict[str, float] = field(default_factory=dict)  # % of one core: hub, receiver, redis, loadgen, other
    rss_mb: float = 0.0  # the hub's processes, right after the run
    receivers: int = 0  # distinct receiver platforms that answered during the run
    loadavg: str = ""  # as `uptime` shows it, right before the run

    @property
    def cpu_us_per_request(self) -> float:
        return self.hub_cpu_s / max(self.result.requests, 1) * 1e6

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"part": self.part, "platforms": self.platforms, "workers": self.workers, "load": self.load,
                "connections": self.connections, "requests": r.requests, "duration_s": round(r.duration_s, 3),
                "rps": round(r.rps, 1), "latency_ms": r.latency_ms, "errors": r.errors,
                "error_rate": round(r.error_rate, 6), "hub_cpu_us_per_request": round(self.cpu_us_per_request, 1),
                "hub_rss_mb": self.rss_mb, "receivers_reached": self.receivers, "cpu_pct_of_one_core": self.cpu_pct,
                "loadavg": self.loadavg}


def median(rows: list[Row]) -> Row:
    """The round with the median req/s (the upper one of an even count), as ``report.pick``."""
    ordered = sorted(rows, key=lambda m: m.result.rps)
    return ordered[len(ordered) // 2]


def _growth(rows: list[Row], load: str) -> str | None:
    same = [m for m in rows if m.part == "platforms" and m.load == load]
    if len(same) < 2:
        return None
    small, big = same[0], same[-1]
    return (f"{load}: {big.platforms:,} platforms / {small.platforms:,}: CPU per request x"
            f"{big.cpu_us_per_request / max(small.cpu_us_per_request, 1e-9):.2f}, req/s x"
            f"{big.result.rps / max(small.result.rps, 1e-9):.2f}, p99 x"
            f"{big.result.latency_ms['p99'] / max(small.result.latency_ms['p99'], 1e-9):.2f}")


def _workers_gain(rows: list[Row], load: str) -> str | None:
    one = next((m for m in rows if m.part == "workers" and m.workers == 1 and m.load == load), None)
    two = next((m for m in rows if m.part == "workers" and m.workers == 2 and m.load == load), None)
    if one is None or two is None:
        return None
    return (f"{load}: --workers 2 / --workers 1: req/s x{two.result.rps / max(one.result.rps, 1e-9):.2f}, "
            f"p99 {one.result.latency_ms['p99']:.1f} -> {two.result.latency_ms['p99']:.1f} ms")


def _getall_line(getall: dict[str, Any]) -> str:
    b, w = getall["broadcast"], getall["walk"]
    pages = w["page_ms"]
    return (f"GET All: {b['accepted']:,}/{b['broadcasts']:,} Locations broadcast TO the hub in {b['seconds']} s "
            f"({b['per_s']} /s; {getall['delivered']:,} fan-out deliveries arrived); walk: {w['items']:,} items "
            f"({w['distinct']:,} distinct, expected {w['expected']:,}: {'OK' if w['ok'] else 'WRONG'}) in "
            f"{w['pages']} pages, {w['seconds']:.2f} s, {w['items_per_s']:,.0f} items/s; ms per page: first third "
            f"{pages['first_third_mean']}, last third {pages['last_third_mean']}, max {pages['max']}")


def render(rows: list[Row], sizes: list[dict[str, Any]], getall: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    head = (f"{'part':<9} | {'platforms':>9} | {'workers':>7} | {'load':<15} | {'conns':>5} | {'req/s':>7} | "
            f"{'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} | {'CPU µs/req':>10} | {'hub CPU%':>8} | "
            f"{'RSS MB':>7} | {'receivers':>9} | load avg")
    lines = [head, "-" * len(head)]
    for m in rows:
        r = m.result
        load = m.load if m.load == ONE else f"{m.load} {m.receivers:,}"
        lines.append(f"{m.part:<9} | {m.platforms:>9,} | {m.workers:>7} | {load:<15} | {m.connections:>5} | "
                     f"{r.rps:>7.0f} | {r.latency_ms['p50']:>7.2f} | {r.latency_ms['p99']:>7.2f} | {r.errors:>6} | "
                     f"{m.cpu_us_per_request:>10.0f} | {m.cpu_pct.get('hub', 0):>8.0f} | {m.rss_mb:>7.0f} | "
                     f"{m.receivers:>9,} | {m.loadavg}")
    lines.append("")
    for s in sizes:
        lines.append(f"{s['name']:<12} {s['platforms']:>6,} platforms, {s['workers']} worker(s): "
                     f"{s['preloaded']:,} written to the store before start in {s['preload_s']:.1f} s (fast path), "
                     f"hub answering after {s['start_s']:.1f} s, {s['handshakes']} by handshake at "
                     f"{s['handshakes_per_s']} /s")
    for line in filter(None, [_growth(rows, ONE), _growth(rows, SPREAD), _workers_gain(rows, ONE),
                              _workers_gain(rows, SPREAD)]):
        lines.append(line)
    if getall:
        lines.append(_getall_line(getall))
    lines.append("")
    lines.append("CPU while measuring (% of one core; the machine has "
                 f"{meta['machine']['cores']} cores = {100 * meta['machine']['cores']}%):")
    for m in rows:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in m.cpu_pct.items())
        lines.append(f"  {m.part} {m.platforms:,} w{m.workers} {m.load:<7} {parts}")
    noisy = [f"{m.part} {m.platforms:,} w{m.workers} {m.load}" for m in rows if m.cpu_pct.get("other", 0) > 25]
    if noisy:
        lines.append(f"WARNING: other processes used > 25% of a core during {'; '.join(noisy)}: figures are noisy")
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], all_rounds: list[Row], sizes: list[dict[str, Any]],
               getall: dict[str, Any] | None, meta: dict[str, Any], ok: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"ok": ok, "meta": meta, "rows": [m.as_dict() for m in rows], "sizes": sizes, "get_all": getall,
           "all_rounds": [m.as_dict() for m in all_rounds]}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
