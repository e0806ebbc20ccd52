"""Moves due deliveries from the outbox to receivers, one lane per destination.

A *lane* serves one webhook URL (the applications configured with it) with
at most ``per_destination_concurrency`` attempts in flight, so a slow or dead
receiver holds up only its own lane. Each lane sleeps on an ``asyncio.Event``
that ``emit``, a finished attempt, or a redelivery sets, or until the
earliest retry of its applications is due; it never polls for new work.

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
import functools
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from callcontrol.webhooks.delivery import post_webhook
from callcontrol.webhooks.metrics import WebhookMetrics
from callcontrol.webhooks.outbox import AttemptRecord, DueDelivery, Outcome, SqliteOutbox
from callcontrol.webhooks.retry import RetryPolicy, decide
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
    outbox: SqliteOutbox
    settings: DeliverySettings
    metrics: WebhookMetrics
    clock: Callable[[], float]
    rng: random.Random


class Lane:
    """One destination URL: claims due heads of its applications and sends them."""

    def __init__(self, url: str, routes: tuple[Route, ...], shared: _Shared) -> None:
        self.url = url
        self._routes = {route.app_id: route for route in routes}
        self._shared = shared
        self._timeout = aiohttp.ClientTimeout(total=shared.settings.request_timeout_s)
        self._wake = asyncio.Event()
        self._stopping = False
        self._deadline = 0.0  # loop time by which attempts in flight must end
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._failure: BaseException | None = None

    @property
    def app_ids(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, deadline: float) -> None:
        self._stopping = True
        self._deadline = deadline
        self._wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                if self._failure is not None:
                    raise self._failure
                self._claim(session)
                await self._sleep()
            if self._in_flight:
                grace = self._deadline - asyncio.get_running_loop().time()
                await asyncio.wait(list(self._in_flight.values()), timeout=max(0.0, grace))
        finally:
            leftover = list(self._in_flight.values())
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.gather(*leftover, return_exceptions=True)

    def _claim(self, session: aiohttp.ClientSession) -> None:
        free = self._shared.settings.concurrency - len(self._in_flight)
        if free <= 0:
            return
        now = self._shared.clock()
        due: list[DueDelivery] = []
        for app_id in self._routes:
            due.extend(self._shared.outbox.due(app_id, now, free, self._in_flight.keys()))
        if len(self._routes) > 1:
            due.sort(key=lambda d: (d.next_attempt_at, d.seq))
        for delivery in due[:free]:
            task = asyncio.create_task(self._attempt(session, delivery), name=f"webhook-{delivery.event_id}")
            self._in_flight[delivery.seq] = task
            self._shared.metrics.in_flight.inc()
            task.add_done_callback(functools.partial(self._finished, delivery.seq))

    def _finished(self, seq: int, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(seq, None)
        self._shared.metrics.in_flight.dec()
        if not task.cancelled() and (exc := task.exception()) is not None and self._failure is None:
            self._failure = exc
        self._wake.set()

    async def _sleep(self) -> None:
        """Until woken, or until the earliest retry that could be claimed is due."""
        if len(self._in_flight) < self._shared.settings.concurrency:
            due_times = [
                due
                for app_id in self._routes
                if (due := self._shared.outbox.next_due(app_id, self._in_flight.keys())) is not None
            ]
            if due_times:
                delay = max(0.0, min(due_times) - self._shared.clock())
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                return
        await self._wake.wait()

    async def _attempt(self, session: aiohttp.ClientSession, delivery: DueDelivery) -> None:
        shared, settings = self._shared, self._shared.settings
        route = self._routes[delivery.app_id]
        started = shared.clock()
        headers = webhook_headers(delivery.event_id, int(started), delivery.body, route.keys)
        result = await post_webhook(session, route.url, delivery.body, headers, self._timeout)
        round_attempts = delivery.round_attempts + 1
        decision = decide(
            status_code=result.status_code,
            retry_after=result.retry_after,
            round_attempts=round_attempts,
            round_started_at=delivery.round_started_at,
            now=shared.clock(),
            max_attempts=settings.max_attempts,
            max_age_s=settings.max_age_s,
            policy=settings.policy,
            rng=shared.rng,
        )
        error = result.error or (
            "" if decision.outcome is Outcome.DELIVERED else f"HTTP {result.status_code}"
        )
        last_error = "; ".join(part for part in (error, decision.give_up_reason) if part)
        shared.outbox.record_attempt(
            delivery.seq,
            AttemptRecord(
                attempt=delivery.attempts + 1,
                started_at=started,
                url=route.url,
                status_code=result.status_code,
                error=result.error,
                latency_ms=result.latency_s * 1000.0,
                outcome=decision.outcome,
            ),
            next_attempt_at=decision.next_attempt_at,
            last_error=last_error,
        )
        self._count(decision.outcome, result.latency_s)
        if decision.outcome is Outcome.RETRY:
            log.info(
                "webhook %s for %s: %s, retry %d in %.1f s",
                delivery.event_id,
                delivery.app_id,
                error,
                round_attempts,
                (decision.next_attempt_at or 0.0) - shared.clock(),
            )
        elif decision.outcome is Outcome.FAILED:
            log.warning("webhook %s for %s failed: %s", delivery.event_id, delivery.app_id, last_error)
        else:
            log.debug("webhook %s for %s delivered", delivery.event_id, delivery.app_id)

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


class Dispatcher:
    """All lanes; routes events to the lane of their application."""

    def __init__(
        self,
        outbox: SqliteOutbox,
        routes: Mapping[str, Route],
        settings: DeliverySettings,
        metrics: WebhookMetrics,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        shared = _Shared(outbox, settings, metrics, clock, rng)
        by_url: dict[str, list[Route]] = {}
        for route in routes.values():
            by_url.setdefault(route.url, []).append(route)
        self._lanes = tuple(Lane(url, tuple(group), shared) for url, group in by_url.items())
        self._lane_of = {app_id: lane for lane in self._lanes for app_id in lane.app_ids}

    def wake(self, app_id: str) -> None:
        lane = self._lane_of.get(app_id)
        if lane is not None:
            lane.wake()

    def stop(self, grace: float) -> None:
        deadline = asyncio.get_running_loop().time() + grace
        for lane in self._lanes:
            lane.stop(deadline)

    async def run(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.TaskGroup() as group:
            for lane in self._lanes:
                group.create_task(lane.run(session), name=f"webhook-lane-{lane.url}")
