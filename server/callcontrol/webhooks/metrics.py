"""Webhook metrics: attempts, outcomes, latency, queue depth, oldest pending age.

The values live in ``prometheus_client`` objects on the service's own
registry (the gateway includes it in its exposition). ``snapshot`` reads them
back as one flat mapping of sample names (``callcontrol_`` prefix dropped,
histogram buckets as ``_bucket{le="..."}``), which is what tests look at.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_NS = "callcontrol"
LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EMIT_BUCKETS_S: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class WebhookMetrics:
    """Counters of the outbox and the dispatcher."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, namespace=_NS, registry=r)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=_NS, registry=r)

        self.events_stored = counter("webhook_events_stored", "Lifecycle events committed to the outbox.")
        self.events_skipped = counter(
            "webhook_events_skipped_no_url",
            "Lifecycle events not stored: the application has no webhook_url.",
        )
        self.emit_failures = counter(
            "webhook_emit_failures",
            "Lifecycle events that could not be stored (the outbox or Redis failed); each is logged.",
        )
        self.attempts = counter("webhook_attempts", "Delivery attempts (HTTP requests) made.")
        self.attempts_failed = counter(
            "webhook_attempts_failed", "Attempts without a 2xx answer (the delivery may still succeed later)."
        )
        self.deliveries_succeeded = counter("webhook_deliveries_succeeded", "Deliveries acknowledged (2xx).")
        self.deliveries_failed = counter("webhook_deliveries_failed", "Deliveries given up.")
        self.redeliveries = counter("webhook_redeliveries", "Finished deliveries queued again over the API.")
        self.queue_depth = gauge("webhook_queue_depth", "Pending deliveries, including those in flight.")
        self.in_flight = gauge("webhook_in_flight", "Attempts under way now.")
        self.oldest_pending_age = gauge(
            "webhook_oldest_pending_age_seconds",
            "Age of the current delivery round of the oldest pending delivery (0 when none).",
        )
        self.attempt_latency = Histogram(
            "webhook_attempt_latency_seconds",
            "Duration of one delivery attempt, until the receiver's answer or the error.",
            namespace=_NS,
            registry=r,
            buckets=LATENCY_BUCKETS_S,
        )
        self.emit_latency = Histogram(
            "webhook_emit_seconds",
            "Time to commit one lifecycle event to the outbox.",
            namespace=_NS,
            registry=r,
            buckets=EMIT_BUCKETS_S,
        )

    def track_oldest_pending(self, age_s: Callable[[], float]) -> None:
        self.oldest_pending_age.set_function(age_s)

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
                name = sample.name.removeprefix(f"{_NS}_")
                out[f"{name}{{{labels}}}" if labels else name] = sample.value
        return out
