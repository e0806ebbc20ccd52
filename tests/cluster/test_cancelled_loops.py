"""A replica's Redis loops stop when cancelled, even when the cancellation comes back as a Redis error.

Under load, a cancellation landing while redis-py is mid-command can come out of it as a
RedisError. The heartbeat (and the webhook lease listener) carry on after Redis errors, so they
went on for ever: a silenced replica kept beating, and a shutdown waited for them without end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.cluster.conftest import StartReplica

_LOST = "connection reset while cancelled"


class _Blocker:
    """Blocks; a cancellation comes back as a Redis error until ``honest`` (the test's clean-up)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.honest = False

    async def block(self) -> None:
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if self.honest:
                raise
            raise RedisConnectionError(_LOST) from None  # what redis-py can make of a cancellation


async def _cancel_and_wait(task: asyncio.Task[Any], blocker: _Blocker) -> None:
    task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.gather(task, return_exceptions=True)), 5)
    finally:
        if not task.done():  # the bug: stop it for real, so the replica can shut down
            blocker.honest = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_a_heartbeat_cancelled_mid_command_stops(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = await start_replica("r1")
    node = replica.gateway.cluster
    assert node is not None
    blocker = _Blocker()

    async def beat(address: str) -> str:
        await blocker.block()
        return ""

    monkeypatch.setattr(node.membership, "beat", beat)
    await asyncio.wait_for(blocker.entered.wait(), 10)
    [heartbeat] = node._tasks
    await _cancel_and_wait(heartbeat, blocker)


class _PubSub:
    """Subscribes, then blocks; a cancellation comes back as a Redis error."""

    def __init__(self, blocker: _Blocker) -> None:
        self._blocker = blocker

    async def subscribe(self, *channels: str) -> None:
        await self._blocker.block()

    async def aclose(self) -> None:
        pass


async def test_the_webhook_lease_listener_cancelled_mid_command_stops(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = await start_replica("r1")
    leases = replica.gateway.webhooks._leases
    assert leases is not None
    blocker = _Blocker()

    def pubsub(**_: Any) -> _PubSub:
        return _PubSub(blocker)

    monkeypatch.setattr(leases._redis, "pubsub", pubsub)
    listener = asyncio.create_task(leases._listen())
    await asyncio.wait_for(blocker.entered.wait(), 10)
    await _cancel_and_wait(listener, blocker)
