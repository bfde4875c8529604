"""Prometheus metrics, defined once. Labels stay low-cardinality: module, role, method, outcome, receiver platform.

Two modes, chosen by prometheus-client itself when it is first imported:

- **one process** (``serve``, tests): every ``Metrics`` has a private registry, so several apps can live in one
  process and each scrape shows exactly its own app.
- **several processes** (``serve --workers N``): ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
  directory before it starts the workers; each worker writes its samples to memory-mapped files there, and
  ``/metrics`` on any worker merges the files of all workers (``MultiProcessCollector``). A scrape of the shared
  port therefore sees the whole hub: counters and histograms are summed over workers.

Gauges are computed by every worker from shared state (Redis queues, the platform store), so in multi-process
mode they use ``multiprocess_mode="mostrecent"``: the latest reading of any worker, never a sum of N copies.
"""

from __future__ import annotations

import asyncio
import logging
import os
from array import array
from bisect import bisect_left
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.multiprocess import MultiProcessCollector

from hub.receiver_metrics import ReceiverMetrics

log = logging.getLogger("hub.metrics")

# 1 ms to 30 s: hub-added latency sits at the bottom, receiver timeouts at the top.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often the request counts kept on the routed path are added to the metrics (hub.metrics.Metrics.count_request)
# when no scrape did it: what a scrape through another worker may lag behind.
REQUEST_FLUSH_EVERY: Final = 1.0
_GAUGE_MODE: Final = "mostrecent"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when prometheus-client writes samples to files, else None.

    prometheus-client picks its value storage once, at import, from ``PROMETHEUS_MULTIPROC_DIR``; we follow what
    it picked rather than the variable now, so values and exposition cannot disagree.
    """
    if _values.ValueClass is _values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


class Metrics:
    """One instance per app; a private registry in single-process mode so tests can create several apps."""

    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ocpi_hub_requests", "OCPI requests handled by the hub",
            ["module", "interface_role", "method", "outcome"], registry=r,
        )
        self.request_latency = Histogram(
            "ocpi_hub_request_duration_seconds", "Time from request received to response sent",
            ["module"], buckets=LATENCY_BUCKETS, registry=r,
        )
        # Per receiver: label sets that grow with the partners, kept compactly (hub/receiver_metrics.py).
        self.receivers = ReceiverMetrics(LATENCY_BUCKETS, share_dir=self.multiprocess_dir)
        self.queue_depth = Gauge("ocpi_hub_queue_depth", "Messages queued per receiver", ["receiver"], registry=r,
                                 multiprocess_mode=_GAUGE_MODE)
        self.queue_inflight = Gauge(
            "ocpi_hub_queue_inflight", "Messages in flight per receiver", ["receiver"], registry=r,
            multiprocess_mode=_GAUGE_MODE,
        )
        self.queue_oldest_age = Gauge(
            "ocpi_hub_queue_oldest_age_seconds", "Age of the oldest queued message per receiver",
            ["receiver"], registry=r, multiprocess_mode=_GAUGE_MODE,
        )
        self.dead_letters = Gauge("ocpi_hub_dead_letters", "Dead letters per receiver", ["receiver"], registry=r,
                                  multiprocess_mode=_GAUGE_MODE)
        self.retries = Counter("ocpi_hub_retries", "Delivery retries", ["receiver"], registry=r)
        self.platforms = Gauge("ocpi_hub_platforms", "Platforms by status", ["status"], registry=r,
                               multiprocess_mode=_GAUGE_MODE)
        self.platforms_by_version = Gauge(
            "ocpi_hub_platforms_by_version", "Platforms (not removed) by the OCPI version they registered in",
            ["version"], registry=r, multiprocess_mode=_GAUGE_MODE,
        )
        self.registrations = Counter(
            "ocpi_hub_registrations", "Credentials registrations, updates and unregistrations",
            ["action", "result"], registry=r,
        )
        self.admission_refused = Counter(
            "ocpi_hub_admission_refused",
            "Requests answered 503 at once because a waiting room was full, by the limit that refused them: "
            "process_requests, process_bytes, receiver_requests, receiver_bytes", ["limit"], registry=r,
        )
        self.admission_waiting_requests = Gauge(
            "ocpi_hub_admission_waiting_requests", "Requests held while they wait on receivers, per process",
            registry=r, multiprocess_mode="livesum",
        )
        self.admission_waiting_bytes = Gauge(
            "ocpi_hub_admission_waiting_bytes", "Request body bytes held while they wait on receivers, per process",
            registry=r, multiprocess_mode="livesum",
        )
        self.rate_limited = Counter(
            "ocpi_hub_rate_limited", "Requests answered 429 because their platform exceeded its rate limit",
            ["platform"], registry=r,
        )
        self.dead_letter_bytes = Gauge(
            "ocpi_hub_dead_letter_bytes", "Payload bytes of the dead letters kept per receiver (capped)", ["receiver"],
            registry=r, multiprocess_mode=_GAUGE_MODE,
        )
        self.dead_letters_evicted = Counter(
            "ocpi_hub_dead_letters_evicted", "Dead letters dropped by the per-receiver caps or the TTL",
            ["receiver", "reason"], registry=r,
        )
        # Per process: 0 while this process sees Redis down, frozen or refusing writes. livemin: any live worker
        # that is cut off shows.
        self.redis_up = Gauge("ocpi_hub_redis_up", "1 when Redis takes the hub's writes, 0 during an outage",
                              registry=r, multiprocess_mode="livemin")
        self.redis_outages = Counter(
            "ocpi_hub_redis_outages", "Redis outages noticed (each answered 503 until it ended), by kind",
            ["kind"], registry=r,
        )
        # Per process: loops that run until shutdown (routing/tasks.py LoopWatch); livemax: any live worker shows.
        self.loops_ended = Gauge(
            "ocpi_hub_background_loops_ended",
            "Background loops of this hub process that ended although they run until shutdown (a bug): /healthz "
            "answers 503 and the process must be restarted", registry=r, multiprocess_mode="livemax",
        )
        self.redis_failovers = Counter(
            "ocpi_hub_redis_failovers",
            "Redis primary changes (Sentinel failovers) this hub process noticed; summed over processes, so one "
            "failover counts once per process that had Redis work to do (0 without Sentinel)", registry=r,
        )
        self.redis_used_memory = Gauge("ocpi_hub_redis_used_memory_bytes", "Redis INFO memory used_memory",
                                       registry=r, multiprocess_mode=_GAUGE_MODE)
        self.redis_maxmemory = Gauge("ocpi_hub_redis_maxmemory_bytes", "Redis maxmemory; 0 = unlimited",
                                     registry=r, multiprocess_mode=_GAUGE_MODE)
        self.audit_dropped = Counter("ocpi_hub_audit_dropped", "Audit records lost to store errors", registry=r)
        self.audit_rejected = Counter(
            "ocpi_hub_audit_rejected",
            "Audit records a store refused: written again with escaped fields (rewritten) or dropped",
            ["result"], registry=r,
        )
        self.malformed_http = Counter(
            "ocpi_hub_malformed_http_requests", "Requests the HTTP parser refused before the hub saw them", registry=r,
        )
        self.log_suppressed = Counter(
            "ocpi_hub_log_lines_suppressed", "Log lines held back by the log throttle, by kind", ["kind"], registry=r,
        )
        self.unknown_tokens = Counter(
            "ocpi_hub_unknown_token_lookups",
            "Tokens unknown to this process: looked up in the store, or refused from the unknown-token cache",
            ["source"], registry=r,
        )
        self.pushes_refused = Counter(
            "ocpi_hub_pushes_refused_by_agreement",
            "Queued hub pushes (broadcast fan-out, ClientInfo) dropped at delivery: no roaming agreement allows "
            "them any more (docs/agreements.md)", ["kind"], registry=r,
        )
        self.translations = Counter(
            "ocpi_hub_translations",
            "Messages whose body or answer the hub translated between OCPI versions (docs/versions.md)",
            ["module", "from_version", "to_version"], registry=r,
        )
        self.translation_losses = Counter(
            "ocpi_hub_translation_losses",
            "Values a translation between OCPI versions dropped, defaulted, derived or mapped, by rule",
            ["module", "from_version", "to_version", "rule"], registry=r,
        )
        self.store_forward = Counter(
            "ocpi_hub_store_forward_events",
            "Messages accepted for later delivery (store-and-forward) and what became of them, per receiver and "
            "module: accepted, delivered, retried, dead_lettered, superseded", ["receiver", "module", "event"],
            registry=r,
        )
        self.store_forward_waiting = Gauge(
            "ocpi_hub_store_forward_waiting", "Messages accepted for later delivery not delivered yet",
            ["receiver", "module"], registry=r, multiprocess_mode=_GAUGE_MODE,
        )
        self.store_forward_oldest_age = Gauge(
            "ocpi_hub_store_forward_oldest_age_seconds", "Age of the oldest message waiting for later delivery",
            ["receiver", "module"], registry=r, multiprocess_mode=_GAUGE_MODE,
        )
        # Labelled children by label values: .labels() takes a lock and builds keys on every call. The label sets
        # are bounded (modules, outcomes, platforms).
        self._children: dict[tuple[str, ...], Any] = {}
        # Requests counted since the last flush, per (module, role, method, outcome): the latency buckets (+Inf
        # last), then the sum of the latencies. See count_request.
        self._latency_bounds = (*(float(b) for b in LATENCY_BUCKETS), float("inf"))
        self._no_requests = array("d", bytes(8 * (len(self._latency_bounds) + 1)))
        self._requests: dict[tuple[str, str, str, str], array[float]] = {}

    def count_request(self, module: str, role: str, method: str, outcome: str, seconds: float) -> None:
        """One request, counted in a plain array until the next ``flush_requests``.

        Once per request: a prometheus-client counter increment and histogram observation, each value behind its
        own lock, cost about 15,000 instructions; this about 6,000 (docs/architecture.md, "Request metrics"). The
        row is laid out as ``hub.receiver_metrics`` lays out a receiver's. Called on the event loop only, as
        ``flush_requests`` is."""
        key = (module, role, method, outcome)
        row = self._requests.get(key)
        if row is None:
            row = self._requests[key] = array("d", self._no_requests)
        row[bisect_left(self._latency_bounds, seconds)] += 1
        row[-1] += seconds

    def flush_requests(self) -> None:
        """Add the requests counted since the last call to ``ocpi_hub_requests_total`` and
        ``ocpi_hub_request_duration_seconds``: on the event loop, before each scrape and every
        ``REQUEST_FLUSH_EVERY`` seconds (``run_request_flush``)."""
        counted, self._requests = self._requests, {}
        children = self._children
        for (module, role, method, outcome), row in counted.items():
            key: tuple[str, ...] = ("r", module, role, method, outcome)
            if (counter := children.get(key)) is None:
                counter = children[key] = self.requests.labels(
                    module=module, interface_role=role, method=method, outcome=outcome)
            if (histogram := children.get(("l", module))) is None:
                histogram = children["l", module] = self.request_latency.labels(module=module)
            counter.inc(sum(row[:-1]))
            # prometheus-client observes one value at a time; its buckets and sum take sums the same way
            for bucket, n in zip(histogram._buckets, row, strict=False):
                if n:
                    bucket.inc(n)
            histogram._sum.inc(row[-1])

    async def run_request_flush(self, every: float = REQUEST_FLUSH_EVERY) -> None:
        """With several workers, another worker's scrape reads what this one flushed."""
        while True:
            await asyncio.sleep(every)
            try:
                self.flush_requests()
            except Exception:  # e.g. the multiprocess directory's disk full: metrics lag, requests go on
                log.warning("flushing the request metrics failed; trying again in %.0f s", every, exc_info=True)

    def observe_receiver(self, module: str, receiver: str, seconds: float) -> None:
        self.receivers.observe(module, receiver, seconds)

    def redis_state(self, up: bool, kind: str) -> None:
        """RedisHealth's hook: the gauge follows the state, the counter counts outages as they start."""
        self.redis_up.set(1 if up else 0)
        if not up:
            self.redis_outages.labels(kind=kind).inc()

    def count_stored(self, msg: Any, fwd: Any, event: str) -> None:
        """Delivery's hook (routing.delivery.Delivery.on_stored)."""
        self.store_forward.labels(receiver=msg.receiver, module=fwd.module, event=event).inc()

    def count_evicted(self, receiver: str, reason: str, n: int) -> None:
        self.dead_letters_evicted.labels(receiver=receiver, reason=reason).inc(n)

    def count_receiver_result(self, receiver: str, result: str) -> None:
        self.receivers.count(receiver, result)

    def count_translation(self, module: str, source: str, target: str, rules: list[str]) -> None:
        self.translations.labels(module=module, from_version=source, to_version=target).inc()
        for rule in rules:
            self.translation_losses.labels(module=module, from_version=source, to_version=target, rule=rule).inc()

    def count_admission_refused(self, limit: str) -> None:
        self.admission_refused.labels(limit=limit).inc()

    def count_rate_limited(self, platform: str) -> None:
        key = ("rl", platform)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.rate_limited.labels(platform=platform)
        child.inc()

    def exposition(self) -> bytes:
        """Prometheus text format: this app's registry, or the merged files of every worker; then the per-receiver
        figures. Seconds of CPU with thousands of receivers: call it off the event loop."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry) + self.receivers.render(*self.receivers.snapshot())
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged) + self.receivers.render(*self.receivers.merged())
