"""Moves due deliveries from the outbox to receivers, one lane per application.

A *lane* serves one application with at most ``per_destination_concurrency``
attempts in flight, so a slow or dead receiver holds up only its own lane.
Two applications configured with the same URL still get a lane each: the
receiver may be slow for one tenant only, and the other must not wait for it.
Each lane sleeps on an ``asyncio.Event`` that ``emit``, a finished attempt,
or a redelivery sets, or until its earliest retry is due; it never polls for
new work. It awaits its claims: a store across the network answers them off
the loop.

Nothing that goes wrong in a lane leaves it. An attempt that raises (a bug,
or a receiver doing something nobody foresaw) is logged with the application
and event id and recorded as an attempt without an answer, so the retry
budget (``max_attempts``, ``max_age_s``) still ends a poison event. When the
outbox itself fails (recording, claiming), the lane logs it and backs off,
then carries on; the other lanes never notice.

Order within a session comes from the outbox: only a session's head is ever
claimed, and the next event becomes head only when the previous one is
delivered or given up. A lane claims earliest-due first, then by emit order.

On ``stop`` a lane claims nothing more, lets attempts in flight finish until
the grace deadline, then cancels the rest; a cancelled attempt is not
recorded, so the delivery is still pending for the next start. The receiver
may have seen it: that is the at-least-once duplicate, with the same
``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from callcontrol.webhooks.delivery import AttemptResult, post_webhook
from callcontrol.webhooks.http_client import Destination, WebhookClient
from callcontrol.webhooks.metrics import WebhookMetrics
from callcontrol.webhooks.outbox import AttemptRecord, DueDelivery, Outbox, Outcome
from callcontrol.webhooks.retry import Decision, RetryPolicy, decide
from callcontrol.webhooks.signing import SigningKey, webhook_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one application's events go and how they are signed."""

    app_id: str
    url: str
    keys: tuple[SigningKey, ...]


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    concurrency: int
    request_timeout_s: float
    max_attempts: int
    max_age_s: float
    policy: RetryPolicy


@dataclass(frozen=True, slots=True)
class _Shared:
    outbox: Outbox
    settings: DeliverySettings
    metrics: WebhookMetrics
    clock: Callable[[], float]
    rng: random.Random


class Lane:
    """One application: claims its due session heads and sends them."""

    def __init__(self, route: Route, shared: _Shared) -> None:
        self.route = route
        self._shared = shared
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._deadline = 0.0  # loop time by which attempts in flight must end
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        # Consecutive outbox failures, for the backoff: claiming, and recording attempts.
        self._claim_errors = 0
        self._record_errors = 0

    @property
    def app_id(self) -> str:
        return self.route.app_id

    def wake(self) -> None:
        self._wake.set()

    def abandon(self) -> None:
        """Cancel the attempts in flight: this process may no longer send them (its lease went).

        Cancelled attempts are not recorded, so they stay pending for whoever delivers now.
        """
        for task in list(self._in_flight.values()):
            task.cancel()

    def stop(self, deadline: float) -> None:
        self._deadline = deadline
        self._stopped.set()
        self._wake.set()

    async def run(self, client: WebhookClient) -> None:
        destination = client.destination(self.route.url)
        try:
            while not self._stopped.is_set():
                self._wake.clear()
                try:
                    next_at = await self._claim(destination)
                    self._claim_errors = 0
                    await self._sleep(next_at)
                except Exception:
                    self._claim_errors += 1
                    delay = self._error_delay(self._claim_errors)
                    log.exception(
                        "webhook lane of %s: the outbox failed; again in %.2f s", self.app_id, delay
                    )
                    await self._pause(delay)
            if self._in_flight:
                grace = self._deadline - asyncio.get_running_loop().time()
                await asyncio.wait(list(self._in_flight.values()), timeout=max(0.0, grace))
        finally:
            leftover = list(self._in_flight.values())
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.gather(*leftover, return_exceptions=True)
            destination.close()

    def _error_delay(self, errors: int) -> float:
        """Backoff after the outbox failed ``errors`` times in a row (no jitter: one lane)."""
        policy = self._shared.settings.policy
        return min(policy.backoff_max_s, policy.backoff_base_s * math.ldexp(1.0, min(errors - 1, 62)))

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds; ``stop`` ends the wait, new work does not."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopped.wait()

    async def _claim(self, destination: Destination) -> float | None:
        """Start the due heads; returns when the next one is due (None: wait to be woken)."""
        free = self._shared.settings.concurrency - len(self._in_flight)
        if free <= 0:
            return None
        claim = await self._shared.outbox.claim(
            self.app_id, self._shared.clock(), free, list(self._in_flight)
        )
        if self._stopped.is_set():
            return None  # stopped while claiming: a claim changes nothing, so nothing to undo
        for delivery in claim.due:
            task = asyncio.create_task(
                self._attempt(destination, delivery), name=f"webhook-{delivery.event_id}"
            )
            self._in_flight[delivery.seq] = task
            self._shared.metrics.in_flight.inc()
            task.add_done_callback(functools.partial(self._finished, delivery.seq, delivery.event_id))
        return claim.next_at

    def _finished(self, seq: int, event_id: str, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(seq, None)
        self._shared.metrics.in_flight.dec()
        # _attempt catches everything; this only guards against a bug there.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("webhook %s for %s: attempt task failed", event_id, self.app_id, exc_info=exc)
        self._wake.set()

    async def _sleep(self, next_at: float | None) -> None:
        """Until woken, or until ``next_at``, the earliest retry that could be claimed."""
        if next_at is None:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, next_at - self._shared.clock())):
                await self._wake.wait()

    async def _attempt(self, destination: Destination, delivery: DueDelivery) -> None:
        """Send once and record it; nothing raised here leaves the lane."""
        started = self._shared.clock()
        clock_start = time.perf_counter()
        try:
            headers = webhook_headers(delivery.event_id, int(started), delivery.body, self.route.keys)
            result = await post_webhook(
                destination, delivery.body, headers, self._shared.settings.request_timeout_s
            )
        except Exception as exc:
            log.exception("webhook %s for %s: the attempt raised", delivery.event_id, self.app_id)
            result = AttemptResult(
                None, f"internal error: {type(exc).__name__}", time.perf_counter() - clock_start
            )
        try:
            decision = self._record(delivery, started, result)
        except Exception:
            # Not recorded, so it stays pending and is sent again (at least
            # once). Holding its slot for the backoff keeps a broken outbox
            # from turning into a hot loop of sends.
            self._record_errors += 1
            delay = self._error_delay(self._record_errors)
            log.exception(
                "webhook %s for %s: the attempt could not be recorded; again in %.2f s",
                delivery.event_id,
                self.app_id,
                delay,
            )
            await self._pause(delay)
            return
        self._record_errors = 0
        self._log(delivery, result, decision)

    def _record(self, delivery: DueDelivery, started: float, result: AttemptResult) -> Decision:
        shared, settings = self._shared, self._shared.settings
        decision = decide(
            status_code=result.status_code,
            retry_after=result.retry_after,
            round_attempts=delivery.round_attempts + 1,
            round_started_at=delivery.round_started_at,
            now=shared.clock(),
            max_attempts=settings.max_attempts,
            max_age_s=settings.max_age_s,
            policy=settings.policy,
            rng=shared.rng,
        )
        shared.outbox.record_attempt(
            delivery.seq,
            AttemptRecord(
                attempt=delivery.attempts + 1,
                started_at=started,
                url=self.route.url,
                status_code=result.status_code,
                error=result.error,
                latency_ms=result.latency_s * 1000.0,
                outcome=decision.outcome,
            ),
            next_attempt_at=decision.next_attempt_at,
            last_error=_last_error(result, decision),
        )
        self._count(decision.outcome, result.latency_s)
        return decision

    def _log(self, delivery: DueDelivery, result: AttemptResult, decision: Decision) -> None:
        if decision.outcome is Outcome.RETRY:
            log.info(
                "webhook %s for %s: %s, retry %d in %.1f s",
                delivery.event_id,
                self.app_id,
                _error(result, decision),
                delivery.round_attempts + 1,
                (decision.next_attempt_at or 0.0) - self._shared.clock(),
            )
        elif decision.outcome is Outcome.FAILED:
            log.warning(
                "webhook %s for %s failed: %s", delivery.event_id, self.app_id, _last_error(result, decision)
            )
        else:
            log.debug("webhook %s for %s delivered", delivery.event_id, self.app_id)

    def _count(self, outcome: Outcome, latency_s: float) -> None:
        metrics = self._shared.metrics
        metrics.attempts.inc()
        metrics.attempt_latency.observe(latency_s)
        if outcome is not Outcome.DELIVERED:
            metrics.attempts_failed.inc()
        if outcome is Outcome.DELIVERED:
            metrics.deliveries_succeeded.inc()
        elif outcome is Outcome.FAILED:
            metrics.deliveries_failed.inc()
        if outcome is not Outcome.RETRY:
            metrics.queue_depth.dec()


def _error(result: AttemptResult, decision: Decision) -> str:
    if result.error or decision.outcome is Outcome.DELIVERED:
        return result.error
    return f"HTTP {result.status_code}"


def _last_error(result: AttemptResult, decision: Decision) -> str:
    return "; ".join(part for part in (_error(result, decision), decision.give_up_reason) if part)


class Dispatcher:
    """All lanes; routes events to the lane of their application."""

    def __init__(
        self,
        outbox: Outbox,
        routes: Mapping[str, Route],
        settings: DeliverySettings,
        metrics: WebhookMetrics,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        shared = _Shared(outbox, settings, metrics, clock, rng)
        self._lanes = tuple(Lane(route, shared) for route in routes.values())
        self._lane_of = {lane.app_id: lane for lane in self._lanes}

    def wake(self, app_id: str) -> None:
        lane = self._lane_of.get(app_id)
        if lane is not None:
            lane.wake()

    def abandon(self, app_id: str) -> None:
        lane = self._lane_of.get(app_id)
        if lane is not None:
            lane.abandon()

    def stop(self, grace: float) -> None:
        deadline = asyncio.get_running_loop().time() + grace
        for lane in self._lanes:
            lane.stop(deadline)

    async def run(self, client: WebhookClient) -> None:
        async with asyncio.TaskGroup() as group:
            for lane in self._lanes:
                group.create_task(lane.run(client), name=f"webhook-lane-{lane.app_id}")
