"""The dialplan's second ``socket``: a surviving replica adopts the call, or lets it go."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import grpc
import pytest

from callcontrol.events import CallHangup, CallInitiated, CommandResult
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, sessions_pb2
from tests.cluster.conftest import StartReplica, until
from tests.cluster.test_routing import _call_on, _reason, _sendmsgs
from tests.conftest import DEMO_AUTH, drain, next_event
from tests.redis_server import RedisServer


async def test_a_call_handed_back_by_a_stopping_replica_is_adopted_with_its_state(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2, r3 = [await start_replica(name) for name in ("r1", "r2", "r3")]
    call = await _call_on(switch, r1, next_sockets=[r2.esl])
    await r1.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await asyncio.wait_for(call.answered.wait(), 5)
    before = await r3.stubs.sessions.GetSession(
        sessions_pb2.GetSessionRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )

    with r2.gateway.events.subscribe() as seen_by_r2, r1.gateway.events.subscribe() as seen_by_r1:
        await r1.gateway.shutdown(grace=0.2)  # its socket closes: FreeSWITCH runs the next `socket`
        await call.wait_connections(2)

        r2_calls = r2.gateway.control._calls
        await until(lambda: call.uuid in r2_calls and not r2_calls[call.uuid].admitting, 5)
        after = await r3.stubs.sessions.GetSession(
            sessions_pb2.GetSessionRequest(session_id=call.uuid), metadata=DEMO_AUTH
        )
        assert (after.state, after.created_at, after.answered_at) == (
            "answered",
            before.created_at,
            before.answered_at,
        )
        # Commands work again, through any replica.
        with r2.gateway.events.subscribe() as results:
            envelope = await r3.stubs.commands.Hangup(
                commands_pb2.HangupRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
            result = await next_event(results, CommandResult, call.uuid)
            assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")
            await next_event(results, CallHangup, call.uuid)
        # Nothing invented: no second call.initiated, no call.hangup for the handover.
        assert not [e for e in drain(seen_by_r2) if isinstance(e, CallInitiated)]
        assert not [e for e in drain(seen_by_r1) if isinstance(e, CallHangup)]
    assert not call.returned_to_dialplan.is_set()


async def test_a_disconnected_call_is_let_go_by_the_next_socket(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    call = await _call_on(switch, r1, next_sockets=[r2.esl])

    with r2.gateway.events.subscribe() as seen_by_r2:
        await r2.stubs.commands.Disconnect(
            commands_pb2.DisconnectRequest(session_id=call.uuid), metadata=DEMO_AUTH
        )
        await asyncio.wait_for(call.returned_to_dialplan.wait(), 5)
    assert len(call.connections) == 2  # it did reach r2, which let it go at once
    assert [c.line for c in call.commands][-1] == "exit"
    assert drain(seen_by_r2) == []
    assert r2.gateway.control.sessions.live(call.uuid) is None


async def test_without_redis_a_replica_refuses_new_work_and_keeps_its_calls(
    start_replica: StartReplica,
    switch: FreeSwitchSimulator,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callcontrol.cluster")
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    held = await _call_on(switch, r1)
    assert r1.gateway.cluster is not None
    assert r2.gateway.cluster is not None

    redis_server.stop(kill=True)

    c1, c2 = r1.gateway.cluster, r2.gateway.cluster
    await until(lambda: not c1.store_ok and not c2.store_ok)

    # A request that needs the directory: refused, with the reason.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await r2.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=held.uuid), metadata=DEMO_AUTH)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert _reason(refused.value) == "CLUSTER_STORE_UNAVAILABLE"
    # A call already held works where it is.
    with r1.gateway.events.subscribe() as events:
        await r1.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=held.uuid), metadata=DEMO_AUTH)
        assert (await next_event(events, CommandResult, held.uuid)).status == "succeeded"
    # A new call is let go at once (it goes on in its dialplan) rather than held blind.
    new = await switch.place_call(gateway=r2.esl)
    await asyncio.wait_for(new.returned_to_dialplan.wait(), 5)
    assert r2.gateway.control.sessions.live(new.uuid) is None

    # Redis comes back (same data, AOF): the replicas say so and route again.
    redis_server.start()

    await until(lambda: c1.store_ok and c2.store_ok)
    assert any("cluster store (Redis) lost" in r.getMessage() for r in caplog.records)
    assert any("cluster store (Redis) is back" in r.getMessage() for r in caplog.records)
    with r1.gateway.events.subscribe() as events:
        envelope = await r2.stubs.commands.Hangup(
            commands_pb2.HangupRequest(session_id=held.uuid), metadata=DEMO_AUTH
        )
        result = await next_event(events, CommandResult, held.uuid)
    assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")
    assert len(_sendmsgs(held, "hangup")) == 1


async def test_replicas_on_one_host_share_the_esl_port(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1 = await start_replica("r1")
    assert r1.gateway.esl_address is not None
    # The second replica binds the very same port (SO_REUSEPORT, cluster mode only).
    r2 = await start_replica("r2", esl=replace(r1.gateway.config.esl, listen=r1.gateway.esl_address))
    assert r2.esl == r1.esl
    # The kernel spreads connections between them; every call is held by one and reachable from both.
    calls = [await switch.place_call(gateway=r1.esl) for _ in range(12)]
    await until(
        lambda: all(
            r1.gateway.control.sessions.live(c.uuid) or r2.gateway.control.sessions.live(c.uuid)
            for c in calls
        )
    )
    held = [bool(r1.gateway.control.sessions.live(c.uuid)) for c in calls]
    assert all(bool(r2.gateway.control.sessions.live(c.uuid)) != h for c, h in zip(calls, held, strict=True))
    for call in calls:
        session = await r1.stubs.sessions.GetSession(
            sessions_pb2.GetSessionRequest(session_id=call.uuid), metadata=DEMO_AUTH
        )
        assert session.session_id == call.uuid


async def test_an_answer_in_progress_when_its_replica_stops_is_reported_once(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    call = await _call_on(switch, r1, next_sockets=[r2.esl], answer_completes=False)
    envelope = await r1.stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )
    with r1.gateway.events.subscribe() as seen_by_r1, r2.gateway.events.subscribe() as seen_by_r2:
        await r1.gateway.shutdown(grace=0.2)
        await call.wait_connections(2)
        r2_calls = r2.gateway.control._calls
        await until(lambda: call.uuid in r2_calls and not r2_calls[call.uuid].admitting, 5)
        # r1 reported it as it let the call go; r2, adopting the call, does not report it again.
        [result] = [e for e in drain(seen_by_r1) if isinstance(e, CommandResult)]
        assert (result.operation_id, result.reason) == (envelope.operation_id, "gateway_shutdown")
        assert [e for e in drain(seen_by_r2) if isinstance(e, CommandResult)] == []
