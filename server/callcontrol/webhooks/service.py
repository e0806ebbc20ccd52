"""The webhook component: an event sink in front, delivery lanes behind.

``emit`` is called by the event stream on the loop; it encodes the event,
commits it to the outbox and wakes the lane of its application, all before
returning, so an emitted event survives a crash. Events of applications
without a ``webhook_url`` are not stored (there is nowhere to send them and
nothing would ever prune them); they are counted in
``webhook_events_skipped_no_url_total``.

The store is the SQLite outbox of a single gateway, or with
``cluster.redis_url`` the Redis outbox all replicas share; then ``Leases``
decides which replica delivers each application (see ``redis_outbox.py`` and
``leases.py``), and nothing else here changes.

``run`` delivers until ``shutdown``. The outbox stays open after shutdown so
late events (hangups while the gateway stops) are still stored for the next
start; ``close`` releases the file.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from enum import StrEnum

from prometheus_client import CollectorRegistry

from callcontrol.config import ConfigError, GatewayConfig, replica_id
from callcontrol.events import LifecycleEvent
from callcontrol.webhooks.catalogue import encode_body
from callcontrol.webhooks.dispatcher import DeliverySettings, Dispatcher, Route
from callcontrol.webhooks.http_client import WebhookClient
from callcontrol.webhooks.leases import Leases
from callcontrol.webhooks.metrics import WebhookMetrics
from callcontrol.webhooks.outbox import (
    DeliveryRecord,
    DeliveryStatus,
    NewDelivery,
    Outbox,
    OutboxError,
    SqliteOutbox,
)
from callcontrol.webhooks.redis_outbox import DEFAULT_PREFIX, RedisOutbox
from callcontrol.webhooks.retry import RetryPolicy
from callcontrol.webhooks.signing import SigningKey

log = logging.getLogger(__name__)

_PRUNE_BATCH = 1000


class RedeliverRefused(Exception):
    """The delivery is still pending; it will be attempted without asking."""


class _State(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def _routes(config: GatewayConfig) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for app in config.applications:
        if not app.webhook_url:
            continue
        keys = []
        for index, secret in enumerate(app.webhook_secrets):
            try:
                keys.append(SigningKey.parse(secret))
            except ValueError as exc:
                raise ConfigError(f"applications[{app.app_id}].webhook_secrets[{index}]: {exc}") from exc
        if not keys:
            raise ConfigError(f"applications[{app.app_id}].webhook_secrets: required with webhook_url")
        routes[app.app_id] = Route(app.app_id, app.webhook_url, tuple(keys))
    return routes


class WebhookService:
    """Stores lifecycle events durably and delivers them as signed webhooks."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        session_factory: Callable[[], WebhookClient] | None = None,
        retry: RetryPolicy | None = None,
        durable_sync: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        redis_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        hooks = config.webhooks
        self._routes = _routes(config)
        self._session_factory = (
            session_factory or WebhookClient
        )  # one for all lanes; each keeps its own connections
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._metrics = WebhookMetrics()
        self._closed = False
        self._leases: Leases | None = None
        self._outbox: Outbox
        self._redis_outbox: RedisOutbox | None = None
        if config.cluster.enabled:
            self._outbox = self._redis_outbox = self._cluster_outbox(config, redis_prefix)
        else:
            self._outbox = SqliteOutbox(hooks.outbox_path, durable_sync=durable_sync)
        try:
            self._recover_orphans()
            if self._leases is None:
                self._metrics.queue_depth.set(self._outbox.pending_count())
            else:
                # Other replicas deliver too: the depth is the cluster's, read at scrape time.
                self._metrics.queue_depth.set_function(self._cluster_pending_count)
        except OutboxError:
            self._outbox.close()
            raise
        self._metrics.track_oldest_pending(self._oldest_pending_age)
        self._dispatcher = Dispatcher(
            self._outbox,
            self._routes,
            DeliverySettings(
                concurrency=hooks.per_destination_concurrency,
                request_timeout_s=hooks.request_timeout_s,
                max_attempts=hooks.max_attempts,
                max_age_s=hooks.max_age_s,
                policy=self._retry,
            ),
            self._metrics,
            clock=clock,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not secrets
        )
        self._state = _State.NEW
        self._stopped = asyncio.Event()
        self._done = asyncio.Event()

    def _cluster_outbox(self, config: GatewayConfig, prefix: str) -> RedisOutbox:
        """The shared Redis outbox and this replica's delivery leases; fails at once without Redis."""
        cluster = config.cluster
        heartbeat_s, expiry_s = cluster.heartbeat_ms / 1000, cluster.expiry_ms / 1000
        if expiry_s <= heartbeat_s:
            raise ConfigError("cluster.expiry_ms: must be longer than cluster.heartbeat_ms")
        # A hung Redis holds the loop (claims, records, reads) for at most this long per call.
        timeout_s = min(1.0, expiry_s / 3)
        outbox = RedisOutbox(cluster.redis_url, prefix=prefix, timeout_s=timeout_s)
        try:
            outbox.ping()
        except OutboxError:
            outbox.close()
            raise
        for warning in outbox.durability_warnings():
            log.warning("Redis at cluster.redis_url: %s", warning)
        self._leases = Leases(
            cluster.redis_url,
            prefix=prefix,
            replica_id=replica_id(config),
            apps=self._routes.keys(),
            heartbeat_s=heartbeat_s,
            expiry_s=expiry_s,
            on_wake=self._wake_lane,
            on_lost=self._abandon_lane,
            timeout_s=timeout_s,
        )
        outbox.set_lease_source(self._leases.token_for)
        outbox.set_recorded_callback(self._wake_lane)
        return outbox

    def _wake_lane(self, app_id: str) -> None:
        self._dispatcher.wake(app_id)

    def _abandon_lane(self, app_id: str) -> None:
        self._dispatcher.abandon(app_id)

    def _cluster_pending_count(self) -> float:
        # As of the last heartbeat: a scrape must not wait on Redis on the loop.
        return math.nan if self._leases is None else self._leases.queue_depth

    @property
    def delivering_apps(self) -> frozenset[str]:
        """Applications whose webhooks this process delivers now (all of them without a cluster)."""
        if self._leases is None:
            return frozenset(self._routes)
        return self._leases.held

    @property
    def store_available(self) -> bool:
        """False while a cluster replica cannot reach Redis: it stores and delivers nothing then."""
        return self._leases is None or self._leases.reachable

    def _recover_orphans(self) -> None:
        """Pending events of applications that lost their webhook_url since they were stored."""
        for app_id in sorted(self._outbox.pending_apps() - self._routes.keys()):
            count = self._outbox.fail_pending(app_id, "application has no webhook_url", self._clock())
            log.warning("failed %d pending webhooks of %s: it has no webhook_url now", count, app_id)

    # -- EventSink ------------------------------------------------------

    def emit(self, event: LifecycleEvent) -> None:
        """Commit the event to the outbox and wake its lane; raises OutboxError if it cannot.

        In a cluster the event goes to Redis off the loop (``RedisOutbox.add_soon``);
        it counts as stored, and its lane is woken, once Redis acknowledged it, and a
        failure is logged and counted then instead of raised (see ``flush``).
        """
        started = time.perf_counter()
        if event.app_id not in self._routes:
            self._metrics.events_skipped.inc()
            log.debug("%s %s not stored: %s has no webhook_url", event.type, event.event_id, event.app_id)
            return
        new = NewDelivery(
            event_id=event.event_id,
            event_type=event.type,
            app_id=event.app_id,
            session_id=event.session_id,
            body=encode_body(event),
            created_at=self._clock(),
        )
        if self._redis_outbox is not None:
            self._redis_outbox.add_soon(new, lambda result: self._stored(event, started, result))
            return
        try:
            stored = self._outbox.add(new)
        except OutboxError as exc:
            self._stored(event, started, exc)
            raise
        self._stored(event, started, stored)

    async def flush(self) -> None:
        """Wait until every event emitted so far is stored (or reported lost)."""
        if self._redis_outbox is not None:
            await self._redis_outbox.flush()

    def _stored(self, event: LifecycleEvent, started: float, stored: bool | OutboxError) -> None:
        if isinstance(stored, OutboxError):
            self._metrics.emit_failures.inc()
            log.error(
                "webhook %s %s of %s (session %s) NOT stored: %s",
                event.type,
                event.event_id,
                event.app_id,
                event.session_id,
                stored,
            )
            return
        if stored:
            self._metrics.events_stored.inc()
            if self._leases is None:
                self._metrics.queue_depth.inc()
            self._dispatcher.wake(event.app_id)
        self._metrics.emit_latency.observe(time.perf_counter() - started)

    # -- lifecycle ------------------------------------------------------

    async def run(self) -> None:
        """Deliver until ``shutdown``; returns at once if it was already called."""
        if self._state is not _State.NEW:
            return
        self._state = _State.RUNNING
        try:
            session = self._session_factory()
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._dispatcher.run(session), name="webhook-dispatcher")
                    group.create_task(self._prune_periodically(), name="webhook-retention")
                    if self._leases is not None:
                        group.create_task(self._leases.run(), name="webhook-leases")
            finally:
                await session.close()
                if self._leases is not None:
                    # After the lanes stopped and their records are in: nothing of ours is in flight.
                    await self.flush()
                    await self._leases.release()
                    await self._leases.aclose()
        finally:
            self._state = _State.STOPPED
            self._done.set()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop claiming; attempts in flight get ``grace`` seconds, then stay pending. Idempotent."""
        if not self._stopped.is_set():
            self._stopped.set()
            self._dispatcher.stop(grace)
            if self._leases is not None:
                self._leases.stop()
        if self._state is _State.RUNNING:
            await self._done.wait()
        self._state = _State.STOPPED
        await self.flush()

    def close(self) -> None:
        """Release the outbox file; call after ``shutdown``. Later emits fail."""
        self._closed = True
        self._outbox.close()

    # -- retention ------------------------------------------------------

    async def _prune_periodically(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.prune()
            except Exception:
                # Pruning is housekeeping: failing it must not stop delivery.
                log.exception(
                    "pruning finished webhook deliveries failed; again in %g s", self._retry.prune_interval_s
                )
            try:
                async with asyncio.timeout(self._retry.prune_interval_s):
                    await self._stopped.wait()
            except TimeoutError:
                pass

    async def prune(self) -> int:
        """Delete finished deliveries past retention, in small batches between loop turns."""
        now = self._clock()
        removed = 0
        for status, keep in (
            (DeliveryStatus.DELIVERED, self._retry.delivered_retention_s),
            (DeliveryStatus.FAILED, self._retry.failed_retention_s),
        ):
            while (batch := self._outbox.prune(status, now - keep, _PRUNE_BATCH)) > 0:
                removed += batch
                await asyncio.sleep(0)
        if removed:
            log.info("pruned %d finished webhook deliveries", removed)
        return removed

    # -- queries for the Deliveries API ---------------------------------

    def get_delivery(self, app_id: str, delivery_id: str) -> DeliveryRecord | None:
        return self._outbox.get(app_id, delivery_id)

    def list_deliveries(
        self, app_id: str, status: DeliveryStatus, limit: int, before_seq: int | None = None
    ) -> list[DeliveryRecord]:
        return list(self._outbox.list_deliveries(app_id, status, limit, before_seq))

    def redeliver(self, app_id: str, delivery_id: str) -> DeliveryRecord | None:
        """Queue a finished delivery again; None if unknown, RedeliverRefused if it cannot be."""
        if self._outbox.get(app_id, delivery_id) is None:
            return None
        if app_id not in self._routes:
            raise RedeliverRefused("the application has no webhook_url")
        try:
            record = self._outbox.requeue(app_id, delivery_id, self._clock())
        except ValueError as exc:
            raise RedeliverRefused(str(exc)) from exc
        if record is not None:
            self._metrics.redeliveries.inc()
            if self._leases is None:
                self._metrics.queue_depth.inc()
            self._dispatcher.wake(app_id)
        return record

    def metrics(self) -> Mapping[str, float]:
        """A snapshot of the counters (see ``callcontrol.webhooks.metrics``)."""
        return self._metrics.snapshot()

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry holding the webhook metrics."""
        return self._metrics.registry

    def _oldest_pending_age(self) -> float:
        if self._closed:
            return 0.0
        if self._leases is not None:
            since = self._leases.oldest_pending_since  # as of the last heartbeat, NaN if unknown
        else:
            try:
                since = self._outbox.oldest_pending_since()
            except OutboxError:
                return math.nan
        if since is None:
            return 0.0
        return math.nan if math.isnan(since) else max(0.0, self._clock() - since)
