"""The benchmark's output: a plain table for people, ``bench/results/latest.json`` for tools."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import Result

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Measured:
    """One scenario's result plus the CPU each process used while it ran (% of one core)."""

    scenario: str  # e.g. "hub GET"
    target: str  # "hub" | "bare"
    method: str
    result: Result
    cpu_pct: dict[str, float] = field(default_factory=dict)
    receiver_seen: int = 0
    drain_s: float | None = None  # store-and-forward: seconds after the load until all it accepted was delivered

    @property
    def cpu_per_request_us(self) -> float:
        """CPU time of the process under test per request: steadier than req/s when the machine is shared."""
        return self.cpu_pct.get(self.target, 0.0) / 100 / max(self.result.rps, 1e-9) * 1e6

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "scenario": self.scenario, "target": self.target, "method": self.method,
            "requests": r.requests, "duration_s": round(r.duration_s, 3), "rps": round(r.rps, 1),
            "latency_ms": r.latency_ms, "errors": r.errors, "error_rate": round(r.error_rate, 6),
            "non2xx": r.non2xx, "bad_ocpi": r.bad_ocpi, "socket_errors": r.socket_errors,
            "receiver_seen": self.receiver_seen, "cpu_pct_of_one_core": self.cpu_pct,
            "cpu_us_per_request": round(self.cpu_per_request_us, 1),
            "drain_s": None if self.drain_s is None else round(self.drain_s, 2),
        }


def pick(rows: list[Measured]) -> list[Measured]:
    """Per scenario, the round with the median req/s (the upper median for an even count), in first-seen order."""
    names = list(dict.fromkeys(m.scenario for m in rows))
    shown = []
    for name in names:
        runs = sorted((m for m in rows if m.scenario == name), key=lambda m: m.result.rps)
        shown.append(runs[len(runs) // 2])
    return shown


def ratios(rows: list[Measured]) -> dict[str, float | None]:
    """hub req/s divided by bare-proxy req/s, per method."""
    out: dict[str, float | None] = {}
    for method in ("GET", "PUT"):
        hub = next((m.result.rps for m in rows if m.target == "hub" and m.method == method), None)
        bare = next((m.result.rps for m in rows if m.target == "bare" and m.method == method), None)
        out[method] = round(hub / bare, 3) if hub is not None and bare else None
    return out


def cpu_ratio(rows: list[Measured], method: str) -> float | None:
    """hub CPU per request divided by bare-proxy CPU per request."""
    hub = next((m.cpu_per_request_us for m in rows if m.target == "hub" and m.method == method), None)
    bare = next((m.cpu_per_request_us for m in rows if m.target == "bare" and m.method == method), None)
    return round(hub / bare, 2) if hub is not None and bare else None


BRIDGED = "PUT 2.3.0>2.2.1"  # the label of the PUT a 2.3.0 CPO sends to a 2.2.1 eMSP (translated by the hub)


def bridged_ratio(rows: list[Measured]) -> tuple[float, float] | None:
    """A bridged PUT against a same-version one through the hub: (req/s ratio, CPU per request ratio)."""
    same = next((m for m in rows if m.target == "hub" and m.method == "PUT"), None)
    bridged = next((m for m in rows if m.target == "hub" and m.method == BRIDGED), None)
    if same is None or bridged is None or not bridged.result.rps:
        return None
    return (round(same.result.rps / bridged.result.rps, 2),
            round(bridged.cpu_per_request_us / max(same.cpu_per_request_us, 1e-9), 2))


AGREEMENTS = "GET agreements"  # the routed GET through a hub with HUB_ROAMING_POLICY=agreements (--agreements)


def agreements_cost(rows: list[Measured]) -> tuple[float, float] | None:
    """The routed GET with roaming agreements enforced against the open hub's: (req/s ratio, hub CPU per request
    added in %, negative = less); the target is under 3 % (docs/agreements.md)."""
    open_ = next((m for m in rows if m.target == "hub" and m.method == "GET"), None)
    enforced = next((m for m in rows if m.target == "hub" and m.method == AGREEMENTS), None)
    if open_ is None or enforced is None or not open_.result.rps:
        return None
    return (round(enforced.result.rps / open_.result.rps, 3),
            round(100 * (enforced.cpu_per_request_us / max(open_.cpu_per_request_us, 1e-9) - 1), 1))


STORED = "PUT stored"  # the PUT to a receiver that opted in for store-and-forward (docs/store-and-forward.md)


def stored_cost(rows: list[Measured]) -> dict[str, Any] | None:
    """Store-and-forward PUT next to the synchronous PUT through the same hub: req/s ratio, the sender's p50
    and p99 in both, the share of accepted PUTs the receiver got during the measured run, and how long the rest
    took to arrive after it."""
    sync = next((m for m in rows if m.target == "hub" and m.method == "PUT"), None)
    stored = next((m for m in rows if m.target == "hub" and m.method == STORED), None)
    if sync is None or stored is None or not sync.result.rps:
        return None
    accepted = stored.result.requests
    return {"rps_ratio": round(stored.result.rps / sync.result.rps, 2),
            "p50_ms": stored.result.latency_ms["p50"], "sync_p50_ms": sync.result.latency_ms["p50"],
            "p99_ms": stored.result.latency_ms["p99"], "sync_p99_ms": sync.result.latency_ms["p99"],
            "delivered_share": round(stored.receiver_seen / accepted, 2) if accepted else 0.0,
            "drain_s": None if stored.drain_s is None else round(stored.drain_s, 2)}


def round_ratios(rows: list[Measured]) -> dict[str, list[float]]:
    """hub req/s divided by bare-proxy req/s within each round, per method: the pair measured back to back, so a
    spell of the host that slows both cancels out (``ratios`` divides each scenario's median round instead)."""
    out: dict[str, list[float]] = {}
    for method in ("GET", "PUT"):
        hub = [m.result.rps for m in rows if m.target == "hub" and m.method == method]
        bare = [m.result.rps for m in rows if m.target == "bare" and m.method == method]
        if hub and len(hub) == len(bare):
            out[method] = [round(h / b, 3) if b else 0.0 for h, b in zip(hub, bare, strict=True)]
    return out


def render_round_ratios(rows: list[Measured]) -> list[str]:
    """One line per method when there are several rounds: each round's ratio and their median (the upper one for an
    even count, as ``pick`` takes)."""
    lines = []
    for method, values in round_ratios(rows).items():
        if len(values) > 1:
            middle = sorted(values)[len(values) // 2]
            lines.append(f"hub/bare req/s {method}, round by round: {', '.join(f'{v:.2f}' for v in values)} "
                         f"(median {middle:.2f})")
    return lines


def render(rows: list[Measured], meta: dict[str, Any]) -> str:
    head = f"{'scenario':<20} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>14} | {'CPU µs/req':>10}"
    lines = [head, "-" * len(head)]
    for m in rows:
        r = m.result
        errors = f"{r.errors} ({r.error_rate:.2%})"
        lines.append(f"{m.scenario:<20} | {r.rps:>8.0f} | {r.latency_ms['p50']:>7.2f} | "
                     f"{r.latency_ms['p99']:>7.2f} | {errors:>14} | {m.cpu_per_request_us:>10.0f}")
    lines.append("")
    for method, ratio in ratios(rows).items():
        cost = cpu_ratio(rows, method)
        if ratio is not None and cost is not None:
            lines.append(f"hub/bare req/s {method}: {ratio:.2f}   (hub CPU per request = {cost:.1f} x bare)")
    if (stored := stored_cost(rows)) is not None:
        lines.append(f"store-and-forward PUT: {stored['rps_ratio']:.2f} x the synchronous PUT in req/s; sender p50 "
                     f"{stored['p50_ms']:.2f} ms (synchronous {stored['sync_p50_ms']:.2f}), p99 {stored['p99_ms']:.2f} "
                     f"ms ({stored['sync_p99_ms']:.2f}); delivered during the run: {stored['delivered_share']:.0%}"
                     + ("" if stored["drain_s"] is None else f", the rest within {stored['drain_s']:.1f} s after it"))
    if (bridged := bridged_ratio(rows)) is not None:
        lines.append(f"bridged PUT (2.3.0 -> 2.2.1) costs {bridged[0]:.2f} x a same-version PUT in req/s, "
                     f"{bridged[1]:.2f} x in hub CPU per request (target <= 2)")
    if (cost := agreements_cost(rows)) is not None:
        lines.append(f"GET with roaming agreements enforced / open hub: {cost[0]:.3f} x req/s, {cost[1]:+.1f} % hub "
                     "CPU per request (target: under 3 % dearer)")
    lines.append("")
    lines.append("CPU while measuring (% of one core; the machine has "
                 f"{meta['machine']['cores']} cores = {100 * meta['machine']['cores']}%):")
    for m in rows:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in m.cpu_pct.items())
        lines.append(f"  {m.scenario:<20} {parts}; receiver saw {m.receiver_seen} requests")
    noisy = [m.scenario for m in rows if m.cpu_pct.get("other", 0) > 25]
    if noisy:
        lines.append(f"WARNING: other processes used > 25% of a core during {', '.join(noisy)}: figures are noisy")
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def render_broadcast(b: dict[str, Any]) -> str:
    """The fan-out table: acceptance and delivery rates, 1000 → last receiver latency, losses and doubles."""
    rate = f"paced at {b['rate_per_s']:g}/s" if b["rate_per_s"] else "unpaced (closed loop)"
    lines = [f"broadcast fan-out: {b['broadcasts']} location PUTs TO NL/HUB, {b['receivers']} eMSP receivers "
             f"(one platform each), concurrency {b['concurrency']}, {rate}, after {b['warmup_broadcasts']} "
             "warm-up broadcasts"]
    head = (f"{'accepted/s':>10} | {'deliveries/s':>12} | {'last p50 ms':>11} | {'last p99 ms':>11} | "
            f"{'last max ms':>11} | {'missing':>7} | {'duplicates':>10}")
    last = b["latency_last_ms"]
    accepted = "-" if b["accepted_per_s"] is None else f"{b['accepted_per_s']:.0f}"
    delivered = "-" if b["deliveries_per_s"] is None else f"{b['deliveries_per_s']:.0f}"
    lines += [head, "-" * len(head),
              f"{accepted:>10} | {delivered:>12} | {_ms(last['p50']):>11} | {_ms(last['p99']):>11} | "
              f"{_ms(last['max']):>11} | {b['missing']:>7} | {b['duplicates']:>10}"]
    first, answer = b["latency_first_ms"], b["answer_ms"]
    lines.append(f"  {b['accepted']}/{b['broadcasts']} answered 1000 in {b['accept_window_s']:.2f} s "
                 f"(answer p50 {_ms(answer['p50'])} ms, p99 {_ms(answer['p99'])} ms); {b['deliveries']} of "
                 f"{b['expected_deliveries']} deliveries made ({b['arrivals']} arrivals) in "
                 f"{b['delivery_window_s']:.2f} s from the first 1000")
    lines.append(f"  1000 → first receiver: p50 {_ms(first['p50'])} ms, p99 {_ms(first['p99'])} ms; "
                 f"hub queues after: {', '.join(f'{k} {v}' for k, v in b['hub_queues'].items())}")
    if b["rate_per_s"] and (b["accepted_per_s"] or 0) < 0.95 * b["rate_per_s"]:
        lines.append(f"  WARNING: the hub accepted fewer than the {b['rate_per_s']:g}/s offered: it was saturated, so "
                     "these figures include queueing in the hub")
    if b["missing"] or b["send_errors"] or b["unexpected"]:
        lines.append(f"  !! {b['missing']} missing deliveries, {b['send_errors']} broadcasts not answered 1000, "
                     f"{b['unexpected']} unexpected arrivals: the run FAILS")
    parts = ", ".join(f"{k} {v:.0f}" for k, v in b["cpu_pct_of_one_core"].items())
    lines.append(f"  CPU over {b['wall_s']:.1f} s (% of one core): {parts}")
    if b["cpu_pct_of_one_core"].get("other", 0) > 25:
        lines.append("WARNING: other processes used > 25% of a core during the fan-out: figures are noisy")
    return "\n".join(lines)


def write_json(rows: list[Measured], shown: list[Measured], meta: dict[str, Any], ok: bool,
               broadcast: dict[str, Any] | None = None, path: Path | None = None) -> Path:
    if path is None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / "latest.json"
    doc = {"ok": ok, "meta": meta, "ratios_hub_over_bare": ratios(shown),
           "round_ratios_hub_over_bare": round_ratios(rows),
           "cpu_per_request_hub_over_bare": {m: cpu_ratio(shown, m) for m in ("GET", "PUT")},
           "bridged_put_over_same_version_put": bridged_ratio(shown),
           "store_and_forward_put": stored_cost(shown),
           "scenarios": [m.as_dict() for m in shown], "all_rounds": [m.as_dict() for m in rows],
           "broadcast": broadcast}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
