"""The per-receiver metrics as /metrics shows them (hub/receiver_metrics.py): Prometheus histogram semantics from a
compact store, and several workers' figures summed from their shared files."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hub.metrics import LATENCY_BUCKETS, Metrics
from hub.receiver_metrics import LATENCY, LATENCY_HELP, RESULTS, RESULTS_HELP, ReceiverMetrics


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def exposition(metrics: ReceiverMetrics, *, shared: bool = False) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                                          float]:
    return samples(metrics.render(*(metrics.merged() if shared else metrics.snapshot())))


def bucket(le: str, receiver: str = "R1", module: str = "locations") -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("ocpi_hub_receiver_duration_seconds_bucket", (("le", le), ("module", module), ("receiver", receiver)))


def series(name: str, receiver: str = "R1", module: str = "locations") -> tuple[str, tuple[tuple[str, str], ...]]:
    return (f"ocpi_hub_receiver_duration_seconds_{name}", (("module", module), ("receiver", receiver)))


def result(receiver: str, outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("ocpi_hub_receiver_results_total", (("receiver", receiver), ("result", outcome)))


def test_buckets_count_values_up_to_and_including_their_bound() -> None:
    metrics = Metrics()
    for seconds in (0.001, 0.0011, 0.5, 31.0):  # on a bound, just above one, on another, above the last
        metrics.observe_receiver("locations", "R1", seconds)
    metrics.count_receiver_result("R1", "ok")
    metrics.count_receiver_result("R1", "ok")
    metrics.count_receiver_result("R1", "timeout")
    got = samples(metrics.exposition())
    assert got[bucket("0.001")] == 1
    assert got[bucket("0.0025")] == 2
    assert got[bucket("0.25")] == 2
    assert got[bucket("0.5")] == 3
    assert got[bucket("30.0")] == 3
    assert got[bucket("+Inf")] == 4
    assert got[series("count")] == 4
    assert got[series("sum")] == pytest.approx(31.5021)
    assert len([k for k in got if k[0].endswith("_bucket")]) == len(LATENCY_BUCKETS) + 1
    assert got[result("R1", "ok")] == 2 and got[result("R1", "timeout")] == 1


def test_a_scrape_sums_every_workers_shared_figures(tmp_path: Path) -> None:
    mine, other = (ReceiverMetrics(LATENCY_BUCKETS, share_dir=str(tmp_path), pid=pid) for pid in (101, 102))
    mine.observe("locations", "R1", 0.003)
    mine.count("R1", "ok")
    other.observe("locations", "R1", 0.2)
    other.observe("sessions", "R2", 2.0)
    other.count("R1", "ok")
    other.count("R2", "unreachable")
    other.write_share()
    other.observe("locations", "R1", 0.2)  # after its last share: not seen yet
    (tmp_path / "receivers-103.json").write_bytes(b'{"latency": [["locations", "R1", [1, 2')  # cut short
    (tmp_path / "receivers-104.json").write_bytes(b'{"latency": [["locations", "R1", [1.0, 2.0]]], "results": []}')

    got = exposition(mine, shared=True)
    assert got[series("count")] == 2
    assert got[series("sum")] == pytest.approx(0.203)
    assert got[bucket("0.005")] == 1 and got[bucket("0.25")] == 2
    assert got[series("count", "R2", "sessions")] == 1
    assert got[result("R1", "ok")] == 2 and got[result("R2", "unreachable")] == 1

    other.write_share()
    assert exposition(mine, shared=True)[series("count")] == 3
    assert exposition(mine)[series("count")] == 1, "unshared: this process's own figures only"


def test_the_text_is_what_prometheus_client_writes_for_the_same_figures() -> None:
    """Rendered by hand for speed: it must stay byte for byte what the library's families give."""
    mine = ReceiverMetrics(LATENCY_BUCKETS)
    registry = CollectorRegistry()
    latency = Histogram(LATENCY, LATENCY_HELP, ["module", "receiver"], buckets=LATENCY_BUCKETS, registry=registry)
    results = Counter(RESULTS, RESULTS_HELP, ["receiver", "result"], registry=registry)
    for module, receiver, seconds in (("locations", "R1", 0.003), ("locations", "R1", 12.5), ("cdrs", 'a"b\\c', 0.0),
                                      ("locations", "R2", 1e-9), ("tokens", "R1", 3600.0)):
        mine.observe(module, receiver, seconds)
        latency.labels(module=module, receiver=receiver).observe(seconds)
        mine.count(receiver, "ok" if seconds < 10 else "timeout")
        results.labels(receiver=receiver, result="ok" if seconds < 10 else "timeout").inc()
    library = b"".join(line + b"\n" for line in generate_latest(registry).splitlines()
                       if b"_created" not in line)  # the library adds creation times; the hub's families do not
    assert mine.render(*mine.snapshot()) == library
