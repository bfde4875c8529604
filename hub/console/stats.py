"""Per-receiver forwarding figures for the Partners page, read from the metrics the hub already keeps
(``ocpi_hub_receiver_results`` and ``ocpi_hub_receiver_duration_seconds``, hub/metrics.py).

They count since the process started (with ``serve --workers N``: since the hub started, summed over its
workers), so the error rate is the share of failed forwards over that span, not a recent rate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from hub.metrics import Metrics

RESULTS = "ocpi_hub_receiver_results_total"
LATENCY_SUM = "ocpi_hub_receiver_duration_seconds_sum"
LATENCY_COUNT = "ocpi_hub_receiver_duration_seconds_count"


@dataclass
class ForwardStats:
    attempts: int = 0
    failures: int = 0  # every result but "ok": OCPI errors, non-OCPI answers, timeouts, unreachable
    latency_sum: float = 0.0  # seconds, over answered forwards
    answered: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.attempts if self.attempts else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_sum / self.answered * 1000 if self.answered else None


def _read(registry: CollectorRegistry) -> dict[str, ForwardStats]:
    stats: dict[str, ForwardStats] = {}
    for family in registry.collect():
        for sample in family.samples:
            receiver = sample.labels.get("receiver")
            if receiver is None:
                continue
            if sample.name == RESULTS:
                s = stats.setdefault(receiver, ForwardStats())
                s.attempts += int(sample.value)
                if sample.labels.get("result") != "ok":
                    s.failures += int(sample.value)
            elif sample.name == LATENCY_SUM:
                stats.setdefault(receiver, ForwardStats()).latency_sum += sample.value
            elif sample.name == LATENCY_COUNT:
                stats.setdefault(receiver, ForwardStats()).answered += int(sample.value)
    return stats


def _merged(path: str) -> dict[str, ForwardStats]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return _read(registry)


async def forward_stats(metrics: Metrics) -> dict[str, ForwardStats]:
    """Figures per receiver platform id; the files of every worker are read off the event loop."""
    if metrics.multiprocess_dir is None:
        return _read(metrics.registry)
    return await asyncio.to_thread(_merged, metrics.multiprocess_dir)
