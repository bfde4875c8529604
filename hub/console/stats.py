"""Per-receiver forwarding figures for the Partners page, read from the metrics the hub already keeps
(``ocpi_hub_receiver_results`` and ``ocpi_hub_receiver_duration_seconds``, hub/metrics.py).

They count since the process started (with ``serve --workers N``: since the hub started, summed over its
workers), so the error rate is the share of failed forwards over that span, not a recent rate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hub.metrics import Metrics
from hub.receiver_metrics import Latency, Results


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


def _read(latency: Latency, results: Results) -> dict[str, ForwardStats]:
    stats: dict[str, ForwardStats] = {}
    for (receiver, result), n in results.items():
        s = stats.setdefault(receiver, ForwardStats())
        s.attempts += n
        if result != "ok":
            s.failures += n
    for (_, receiver), row in latency.items():  # buckets and +Inf, then the sum
        s = stats.setdefault(receiver, ForwardStats())
        s.latency_sum += row[-1]
        s.answered += int(sum(row[:-1]))
    return stats


async def forward_stats(metrics: Metrics) -> dict[str, ForwardStats]:
    """Figures per receiver platform id; the files of every worker are read off the event loop."""
    receivers = metrics.receivers
    if metrics.multiprocess_dir is None:
        return _read(*receivers.snapshot())
    return await asyncio.to_thread(lambda: _read(*receivers.merged()))
