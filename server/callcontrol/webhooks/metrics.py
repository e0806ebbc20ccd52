"""In-process webhook counters, read as one flat snapshot.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms with cumulative ``_bucket{le="..."}`` keys) so exposing them later
is a rename-free export. Everything is updated on the event loop, so plain
integers suffice.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EMIT_BUCKETS_S: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class Histogram:
    __slots__ = ("_bounds", "_counts", "count", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self.count += 1
        self.sum += value

    def snapshot(self, name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        running = 0
        for bound, count in zip(self._bounds, self._counts, strict=False):
            running += count
            out[f'{name}_bucket{{le="{bound:g}"}}'] = running
        out[f'{name}_bucket{{le="+Inf"}}'] = self.count
        out[f"{name}_sum"] = self.sum
        out[f"{name}_count"] = self.count
        return out


class WebhookMetrics:
    """Counters of the outbox and the dispatcher."""

    __slots__ = (
        "attempt_latency",
        "attempts",
        "attempts_failed",
        "deliveries_failed",
        "deliveries_succeeded",
        "emit_latency",
        "events_skipped",
        "events_stored",
        "in_flight",
        "queue_depth",
        "redeliveries",
    )

    def __init__(self) -> None:
        self.events_stored = 0
        self.events_skipped = 0  # the application has no webhook_url
        self.attempts = 0
        self.attempts_failed = 0  # no 2xx; the delivery may still succeed later
        self.deliveries_succeeded = 0
        self.deliveries_failed = 0  # given up
        self.redeliveries = 0
        self.queue_depth = 0  # pending deliveries, including in flight
        self.in_flight = 0
        self.attempt_latency = Histogram(LATENCY_BUCKETS_S)
        self.emit_latency = Histogram(EMIT_BUCKETS_S)

    def snapshot(self) -> dict[str, float]:
        return {
            "webhook_events_stored_total": self.events_stored,
            "webhook_events_skipped_no_url_total": self.events_skipped,
            "webhook_attempts_total": self.attempts,
            "webhook_attempts_failed_total": self.attempts_failed,
            "webhook_deliveries_succeeded_total": self.deliveries_succeeded,
            "webhook_deliveries_failed_total": self.deliveries_failed,
            "webhook_redeliveries_total": self.redeliveries,
            "webhook_queue_depth": self.queue_depth,
            "webhook_in_flight": self.in_flight,
            **self.attempt_latency.snapshot("webhook_attempt_latency_seconds"),
            **self.emit_latency.snapshot("webhook_emit_seconds"),
        }
