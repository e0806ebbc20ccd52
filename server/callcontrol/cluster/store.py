"""The one Redis connection of a replica, and what its failure means to callers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from callcontrol.errors import Unavailable

T = TypeVar("T")

STORE_UNAVAILABLE = "cluster_store_unavailable"
PREFIX = "callcontrol:"


def connect(url: str, timeout_s: float) -> redis.Redis:
    # Short socket timeouts and one immediate retry (a pooled connection may be
    # stale after a Redis restart): a lost Redis must fail a request, not hang it.
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1),
    )


async def checked(call: Awaitable[T]) -> T:
    """Await a Redis call; a Redis failure becomes UNAVAILABLE with a reason."""
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise Unavailable(
            f"the cluster store (Redis) is unavailable: {type(exc).__name__}", reason=STORE_UNAVAILABLE
        ) from exc


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and the cancellation got lost.

    A cancellation that lands while redis-py is mid-command can come back out of it as a
    RedisError (seen under load: a replica's heartbeat went on beating after shutdown had
    cancelled it, and the shutdown waited for it forever). A loop that carries on after
    Redis errors calls this before every round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def text(value: bytes | str | None) -> str | None:
    """A reply as text (the client decodes; its types do not say so)."""
    if isinstance(value, bytes):
        return value.decode()
    return value
