"""Who delivers which application's webhooks in a cluster: one lease per application.

A lease is a Redis key ``P lease:<app>`` holding the holder's token, set with
``NX PX expiry`` and renewed by its holder every heartbeat. Every replica runs
a ``Leases`` loop for every application it knows: it renews what it holds
and takes what has expired (a dead or stopped replica's), so a lane has
exactly one live deliverer and a dead holder's lanes move within about
``expiry``. The outbox fences writes with the token, so a holder that lost
its lease (paused, cut off) cannot record over the new holder's work.

Locally a lease counts as held until ``expiry`` after the renewal that
confirmed it was *sent* - never longer than Redis keeps it. A lease found
taken, or every lease when Redis cannot be reached, is dropped at once: the
lane claims nothing more and its attempts in flight are cancelled
(``on_lost``), unrecorded, for the next holder to send; delivery resumes here
when this replica holds the lease again.

The loop also listens on ``P wake`` (published by the outbox on every new
event) so the holder starts an event emitted on another replica at once;
the heartbeat wake is the fallback if a message is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Collection
from typing import Final

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from callcontrol.cluster.store import stop_if_cancelled

log = logging.getLogger(__name__)

# ARGV: prefix, token, expiry ms, apps... -> per app 0 not held, 1 renewed, 2 acquired
_TAKE_OR_RENEW: Final = """
local out = {}
for i = 4, #ARGV do
    local key = ARGV[1] .. 'lease:' .. ARGV[i]
    local holder = redis.call('GET', key)
    if holder == ARGV[2] then
        redis.call('PEXPIRE', key, ARGV[3])
        out[#out + 1] = 1
    elseif not holder then
        redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
        out[#out + 1] = 2
    else
        out[#out + 1] = 0
    end
end
return out
"""

# ARGV: prefix, token, apps...
_RELEASE: Final = """
for i = 3, #ARGV do
    local key = ARGV[1] .. 'lease:' .. ARGV[i]
    if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
end
return 0
"""


class Leases:
    """Takes, renews and gives up the delivery leases of one replica."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        replica_id: str,
        apps: Collection[str],
        heartbeat_s: float,
        expiry_s: float,
        on_wake: Callable[[str], None],
        on_lost: Callable[[str], None] = lambda app_id: None,
        timeout_s: float = 1.0,
    ) -> None:
        if expiry_s <= heartbeat_s:
            raise ValueError("cluster.expiry_ms must be longer than cluster.heartbeat_ms")
        self.prefix = prefix
        self.replica_id = replica_id
        # Unique per process, so a restarted replica with the same name does
        # not mistake its predecessor's lease for its own.
        self.token = f"{replica_id}/{uuid.uuid4().hex[:12]}"
        self._apps = tuple(sorted(apps))
        self._heartbeat_s = heartbeat_s
        self._expiry_s = expiry_s
        self._on_wake = on_wake
        self._on_lost = on_lost
        self._redis = aredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._take = self._redis.register_script(_TAKE_OR_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._held: dict[str, float] = {}  # app -> monotonic time the lease is trusted until
        self._reachable = True
        #: The cluster's pending deliveries and the oldest one's round start (None: none),
        #: read at every tick so a metrics scrape never waits on Redis; NaN until known.
        self.queue_depth = math.nan
        self.oldest_pending_since: float | None = math.nan
        self._stopped = asyncio.Event()

    def token_for(self, app_id: str) -> str | None:
        """This replica's token if it holds ``app_id``'s lease now, else None."""
        until = self._held.get(app_id)
        if until is None:
            return None
        if time.monotonic() >= until:
            # Not renewed in time (Redis slow or the loop starved): stop trusting it.
            self._held.pop(app_id, None)
            log.warning("webhook lease of %s expired before it was renewed; delivery paused", app_id)
            return None
        return self.token

    @property
    def held(self) -> frozenset[str]:
        # A copy: token_for drops a lease that expired unrenewed.
        return frozenset(app for app in list(self._held) if self.token_for(app) is not None)

    @property
    def reachable(self) -> bool:
        """False while Redis does not answer: this replica delivers nothing then."""
        return self._reachable

    async def tick(self) -> None:
        """Renew what is held, take what is free; wake every lane held (once per heartbeat)."""
        sent = time.monotonic()
        try:
            await self._read_queue()
            if not self._apps:
                return
            result = await self._take(args=[self.prefix, self.token, int(self._expiry_s * 1000), *self._apps])
        except redis.RedisError as exc:
            self._lost_redis(exc)
            return
        if not self._reachable:
            self._reachable = True
            log.warning("Redis answers again; webhook leases are being taken again")
        for app, state in zip(self._apps, result, strict=True):
            if int(state) == 0:
                if self._held.pop(app, None) is not None:
                    log.warning(
                        "webhook lease of %s was taken by another replica; delivery stopped here", app
                    )
                    self._on_lost(app)
                continue
            if int(state) == 2 or app not in self._held:
                log.info("webhook lease of %s taken by %s: delivering its lane", app, self.replica_id)
            self._held[app] = sent + self._expiry_s
            self._on_wake(app)

    async def _read_queue(self) -> None:
        key = f"{self.prefix}pending"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            depth, oldest = await pipe.execute()
        self.queue_depth = float(depth)
        self.oldest_pending_since = float(oldest[0][1]) if oldest else None

    def _lost_redis(self, exc: Exception) -> None:
        self.queue_depth = self.oldest_pending_since = math.nan
        if self._reachable:
            log.error(
                "Redis unreachable (%s): webhook delivery paused on %s, leases of %s given up",
                exc,
                self.replica_id,
                ", ".join(sorted(self._held)) or "no application",
            )
        self._reachable = False
        held, self._held = list(self._held), {}
        for app in held:
            self._on_lost(app)

    async def run(self) -> None:
        """Until ``stop``: renew every heartbeat and listen for new events."""
        listener = asyncio.create_task(self._listen(), name="webhook-lease-listener")
        try:
            while not self._stopped.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._heartbeat_s):
                        await self._stopped.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        """Wake held lanes on ``P wake``; reconnects after a Redis outage."""
        while True:
            stop_if_cancelled()
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(f"{self.prefix}wake")
                async for message in pubsub.listen():
                    data = message.get("data")
                    app = data.decode(errors="replace") if isinstance(data, bytes) else None
                    if app in self._held:
                        self._on_wake(app)
            except redis.RedisError:
                pass  # the tick loop logs the outage; listen again after a heartbeat
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._heartbeat_s)

    def stop(self) -> None:
        self._stopped.set()

    async def release(self) -> None:
        """Give every held lease back (a clean stop): the next replica need not wait for expiry."""
        held, self._held = sorted(self._held), {}
        if not held:
            return
        try:
            await self._release(args=[self.prefix, self.token, *held])
            log.info("webhook leases of %s released by %s", ", ".join(held), self.replica_id)
        except redis.RedisError as exc:
            log.warning("could not release webhook leases (they expire on their own): %s", exc)

    async def aclose(self) -> None:
        await self._redis.aclose()
