"""The gateway's request limits, applied once, in the server, for gRPC and REST alike.

* Per application and group, after authentication: only a caller holding the
  application's key spends its budget. Groups come from the ``google.api.http``
  bindings (``callcontrol.rest.descriptor``), so a session command counts against
  the ``sessions`` group together with the other session endpoints.
* Failed authentication per client address: a wrong-key guesser is refused
  (before its key is even checked) once its failures outrun the allowance.

Token buckets refill continuously. Own code rather than a library: a dict of
two floats per key is all it takes, and the clock is injectable for tests.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, Protocol, TypeVar

from callcontrol.errors import ResourceExhausted

K = TypeVar("K", bound=Hashable)
# Client addresses tracked by the failed-authentication limiter; the least
# recently seen are forgotten first, so a sweep of source addresses cannot grow memory.
MAX_TRACKED_ADDRESSES = 65536


class RateLimited(ResourceExhausted):
    reason = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(f"{message}; retry in {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class TokenBuckets(Generic[K]):
    """One bucket per key: ``capacity`` tokens, refilled at ``per_s``; LRU-bounded."""

    def __init__(
        self, capacity: float, per_s: float, *, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._capacity = capacity
        self._rate = per_s
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[K, _Bucket] = OrderedDict()

    def _refilled(self, key: K) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._capacity, now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.stamp) * self._rate)
            bucket.stamp = now
        return bucket

    def wait(self, key: K) -> float:
        """Seconds until ``key`` has a whole token (0: it has one now)."""
        bucket = self._refilled(key)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self._rate

    def take(self, key: K) -> float:
        """Take a token and return 0, or return the wait when there is none."""
        bucket = self._refilled(key)
        if bucket.tokens < 1.0:
            return (1.0 - bucket.tokens) / self._rate
        bucket.tokens -= 1.0
        return 0.0

    def spend(self, key: K) -> None:
        """Take a token whether or not one is there (never below zero)."""
        bucket = self._refilled(key)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)


class RateLimiter:
    """Requests per second per (application, group); a bucket holds one second of them."""

    def __init__(
        self,
        per_s: int,
        groups: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``groups`` maps a gRPC method path (``/pkg.Service/Method``) to its group."""
        self._groups = groups
        # At most (applications x groups) keys: callers are authenticated first.
        self._buckets: TokenBuckets[tuple[str, str]] = TokenBuckets(
            float(per_s), float(per_s), max_keys=1 << 20, clock=clock
        )

    async def acquire(self, app_id: str, method: str) -> None:
        """``Limiter``: the same as ``check``."""
        self.check(app_id, method)

    def check(self, app_id: str, method: str) -> None:
        """Take one token for this call, or raise RateLimited with the wait."""
        group = self._groups.get(method)
        if group is None:
            return
        wait = self._buckets.take((app_id, group))
        if wait:
            raise RateLimited(f"too many requests in group {group!r}", wait)


class Limiter(Protocol):
    """Requests per (application, group): this process's buckets, or the cluster's."""

    async def acquire(self, app_id: str, method: str) -> None:
        """Take one token for this call, or raise RateLimited with the wait."""


class AuthFailureLimiter:
    """Failed authentications per client address: ``per_minute``, in bursts of as many."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: TokenBuckets[str] = TokenBuckets(
            float(per_minute), per_minute / 60.0, max_keys=MAX_TRACKED_ADDRESSES, clock=clock
        )

    def check(self, address: str) -> None:
        """Raise RateLimited while ``address`` has used up its failures."""
        wait = self._buckets.wait(address)
        if wait:
            raise RateLimited("too many failed authentications from this address", wait)

    def failed(self, address: str) -> None:
        self._buckets.spend(address)


def method_groups(bindings: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """``(service, method, group)`` triples → ``{"/service/method": group}``."""
    return {f"/{service}/{method}": group for service, method, group in bindings}


def retry_after_seconds(error: RateLimited) -> int:
    """Whole seconds for an HTTP Retry-After header (at least 1)."""
    return max(1, math.ceil(error.retry_after_s))
