"""Per-application, per-group request limits for callers that reach gRPC directly.

Groups come from the same ``google.api.http`` bindings Envoy's routes use
(``callcontrol.rest.descriptor``), so a session command counts against the
``sessions`` group together with the other session endpoints on both paths.
Each (application, group) has a token bucket refilled continuously; REST
traffic, already limited by Envoy's discrete buckets at the same rate, never
reaches this one's bottom.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping

from callcontrol.errors import ResourceExhausted


class RateLimited(ResourceExhausted):
    reason = "rate_limited"

    def __init__(self, group: str, retry_after_s: float) -> None:
        super().__init__(f"too many requests in group {group!r}; retry in {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    def __init__(
        self,
        per_s: int,
        groups: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``groups`` maps a gRPC method path (``/pkg.Service/Method``) to its group."""
        self._rate = float(per_s)
        self._groups = groups
        self._clock = clock
        # At most (applications x groups) entries: callers are authenticated first.
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def check(self, app_id: str, method: str) -> None:
        """Take one token for this call, or raise RateLimited with the wait."""
        group = self._groups.get(method)
        if group is None:
            return
        now = self._clock()
        bucket = self._buckets.get((app_id, group))
        if bucket is None:
            bucket = self._buckets[(app_id, group)] = _Bucket(self._rate, now)
        bucket.tokens = min(self._rate, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            raise RateLimited(group, (1.0 - bucket.tokens) / self._rate)
        bucket.tokens -= 1.0


def method_groups(bindings: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """``(service, method, group)`` triples → ``{"/service/method": group}``."""
    return {f"/{service}/{method}": group for service, method, group in bindings}


def retry_after_seconds(error: RateLimited) -> int:
    """Whole seconds for an HTTP Retry-After header (at least 1)."""
    return max(1, math.ceil(error.retry_after_s))
