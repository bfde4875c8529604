"""Prometheus metrics, defined once. Labels stay low-cardinality: module, role, method, outcome, receiver party."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# 1 ms to 30 s: hub-added latency sits at the bottom, receiver timeouts at the top.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """One instance per process; the registry is private so tests can create several apps."""

    def __init__(self) -> None:
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
        self.receiver_latency = Histogram(
            "ocpi_hub_receiver_duration_seconds", "Time the receiver took to answer a forwarded request",
            ["module", "receiver"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("ocpi_hub_queue_depth", "Messages queued per receiver", ["receiver"], registry=r)
        self.queue_inflight = Gauge(
            "ocpi_hub_queue_inflight", "Messages in flight per receiver", ["receiver"], registry=r,
        )
        self.queue_oldest_age = Gauge(
            "ocpi_hub_queue_oldest_age_seconds", "Age of the oldest queued message per receiver",
            ["receiver"], registry=r,
        )
        self.dead_letters = Gauge("ocpi_hub_dead_letters", "Dead letters per receiver", ["receiver"], registry=r)
        self.retries = Counter("ocpi_hub_retries", "Delivery retries", ["receiver"], registry=r)
        self.platforms = Gauge("ocpi_hub_platforms", "Platforms by status", ["status"], registry=r)
        self.registrations = Counter(
            "ocpi_hub_registrations", "Credentials registrations, updates and unregistrations",
            ["action", "result"], registry=r,
        )
        self.audit_dropped = Counter("ocpi_hub_audit_dropped", "Audit records lost to store errors", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
