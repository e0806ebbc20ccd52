"""A live call's directory entry outlives its TTL: the owner refreshes it while it holds the call."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from callcontrol.cluster.directory import ENDED_TTL_S, Directory, SessionEntry
from callcontrol.cluster.store import PREFIX, connect
from callcontrol.events import CommandResult
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from tests.cluster.conftest import StartReplica
from tests.cluster.test_routing import _call_on
from tests.conftest import DEMO_AUTH, next_event
from tests.redis_server import RedisServer

TTL_S = 2  # 24 h in production


async def test_a_call_longer_than_the_directory_ttl_keeps_its_route(
    start_replica: StartReplica, switch: FreeSwitchSimulator, redis_server: RedisServer
) -> None:
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    assert r1.gateway.cluster is not None
    r1.gateway.cluster.directory.live_ttl_s = TTL_S
    call = await _call_on(switch, r1)
    started = time.monotonic()
    client = connect(redis_server.url, 1.0)
    key = f"{PREFIX}session:{call.uuid}"
    try:
        assert 0 < await client.ttl(key) <= TTL_S
        # Two and a half TTLs: without a refresh the entry is gone after one.
        while time.monotonic() - started < 2.5 * TTL_S:
            assert await client.exists(key), "the live call's directory entry expired"
            await asyncio.sleep(0.1)  # watching the key over time: nothing announces a refresh
        assert 0 < await client.ttl(key) <= TTL_S
    finally:
        await client.aclose()
    # Another replica still finds the owner.
    with r1.gateway.events.subscribe() as events:
        envelope = await r2.stubs.commands.Hangup(
            commands_pb2.HangupRequest(session_id=call.uuid), metadata=DEMO_AUTH
        )
        result = await next_event(events, CommandResult, call.uuid)
    assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")


async def test_an_ended_or_adopted_entry_is_not_refreshed(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, 1.0)
    try:
        directory = Directory(client, live_ttl_s=TTL_S)
        now = datetime.now(UTC)
        live = SessionEntry("live", "r1", "app", "answered", now)
        ended = SessionEntry("ended", "r1", "app", "hangup", now)
        adopted = SessionEntry("adopted", "r2", "app", "answered", now)
        for entry in (live, ended, adopted):
            assert await directory.put_session(entry)
        directory.live_ttl_s = 100
        assert await directory.refresh("r1", ["live", "ended", "adopted", "unknown"]) == 1
        assert 2 < await client.ttl(f"{PREFIX}session:live") <= 100
        assert TTL_S < await client.ttl(f"{PREFIX}session:ended") <= ENDED_TTL_S
        assert 0 < await client.ttl(f"{PREFIX}session:adopted") <= TTL_S
        assert not await client.exists(f"{PREFIX}session:unknown")
    finally:
        await client.aclose()
