"""A call that hangs up while its admission is still asking Redis: initiated first, hangup after."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from callcontrol.cluster.directory import Directory
from callcontrol.cluster.store import connect
from callcontrol.control import Admission, CallControl
from callcontrol.events import CallAnswered, CallHangup, CallInitiated
from callcontrol.sessions import Session
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from tests.cluster.conftest import StartReplica, until
from tests.cluster.test_routing import _sendmsgs
from tests.conftest import DEMO_AUTH, next_event
from tests.redis_server import RedisServer


def _hold_admission(control: CallControl) -> asyncio.Event:
    """Admission waits (as if the directory lookup were still on its way) until the event is set."""
    admit, gate = control.admit, asyncio.Event()
    assert admit is not None

    async def slow_lookup(session: Session) -> Admission:
        await gate.wait()
        return await admit(session)

    control.admit = slow_lookup
    return gate


@pytest.mark.parametrize("hangup_order", ["complete_first", "notice_first"])
async def test_a_hangup_during_admission_is_reported_after_call_initiated(
    start_replica: StartReplica,
    switch: FreeSwitchSimulator,
    redis_server: RedisServer,
    hangup_order: str,
) -> None:
    r1 = await start_replica("r1")
    control = r1.gateway.control
    gate = _hold_admission(control)
    with r1.gateway.events.subscribe() as events:
        call = await switch.place_call(gateway=r1.esl, hangup_order=hangup_order)  # type: ignore[arg-type]
        await until(lambda: call.uuid in control._calls)
        await call.caller_hangup()
        # The gateway has read the whole teardown (or let the socket go) while admission waits.
        await until(
            lambda: (c := control._calls.get(call.uuid)) is None or (c.cause is not None and c.lingering)
        )
        gate.set()
        first = await next_event(events, CallInitiated | CallHangup, call.uuid)  # type: ignore[arg-type]
        assert isinstance(first, CallInitiated), f"{first.type} came before call.initiated"
        hangup = await next_event(events, CallHangup, call.uuid)
        assert hangup.cause == "NORMAL_CLEARING"

    await call.wait_closed()
    assert control.sessions.live(call.uuid) is None
    # The directory ends with the hangup, not with the admission's "ringing" written after it.
    directory_client = connect(redis_server.url, 1.0)
    try:
        directory = Directory(directory_client)

        async def wait_ended() -> None:
            while True:
                entry = await directory.session(call.uuid)
                if entry is not None and entry.state == "hangup":
                    return
                await asyncio.sleep(0.02)  # polling Redis: the write is the sink's own task

        await asyncio.wait_for(wait_ended(), 5)
    finally:
        await directory_client.aclose()


async def test_a_command_during_admission_is_refused_so_nothing_overtakes_call_initiated(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1 = await start_replica("r1")
    control = r1.gateway.control
    gate = _hold_admission(control)
    with r1.gateway.events.subscribe() as events:
        call = await switch.place_call(gateway=r1.esl)
        await until(lambda: call.uuid in control._calls)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r1.stubs.commands.Answer(
                commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert _sendmsgs(call, "execute") == []
        gate.set()
        await next_event(events, CallInitiated, call.uuid)
        await r1.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
        await next_event(events, CallAnswered, call.uuid)
