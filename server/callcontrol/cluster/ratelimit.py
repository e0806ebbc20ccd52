"""Request limits per application and group counted in Redis, so N replicas allow what one does.

The same token bucket as ``callcontrol.api.ratelimit`` (a bucket holds one
second of requests), kept in one Redis hash per (application, group) and
refilled by Redis's own clock inside a script, so replicas need no shared clock.
If Redis cannot be reached the replica counts locally meanwhile: the API stays
up for the calls it holds, each replica allowing the limit on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis.asyncio as redis
from redis.exceptions import RedisError

from callcontrol.api.ratelimit import RateLimited, RateLimiter
from callcontrol.cluster.store import PREFIX

log = logging.getLogger(__name__)

_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local cap = tonumber(ARGV[1])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(bucket[1]) or cap
local stamp = tonumber(bucket[2]) or t
tokens = math.min(cap, tokens + math.max(0, t - stamp) * cap)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / cap else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(t))
redis.call('EXPIRE', KEYS[1], 10)
return tostring(wait)
"""


class ClusterRateLimiter:
    def __init__(self, client: redis.Redis, per_s: int, groups: Mapping[str, str]) -> None:
        self._per_s = per_s
        self._groups = groups
        self._take = client.register_script(_TAKE)
        self._local = RateLimiter(per_s, groups)
        self._degraded = False

    async def acquire(self, app_id: str, method: str) -> None:
        group = self._groups.get(method)
        if group is None:
            return
        try:
            wait = float(await self._take(keys=[f"{PREFIX}rate:{app_id}:{group}"], args=[self._per_s]))
        except (RedisError, OSError) as exc:
            if not self._degraded:
                log.warning(
                    "rate limits counted by this replica alone while Redis is away: %s", type(exc).__name__
                )
            self._degraded = True
            await self._local.acquire(app_id, method)
            return
        self._degraded = False
        if wait > 0:
            raise RateLimited(f"too many requests in group {group!r}", wait)
