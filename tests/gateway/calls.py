"""What the hostile-peer tests ask of the gateway about its calls, over its real APIs."""

from __future__ import annotations

from typing import Any

from callcontrol.config import Address
from callcontrol.events import CallInitiated, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator, SimulatedCall
from callcontrol.v1 import commands_pb2, sessions_pb2
from tests.conftest import DEMO_AUTH, Stubs, next_event
from tests.esl_peer import RawPeer


def esl_address(gateway: Gateway) -> Address:
    assert gateway.esl_address is not None
    return gateway.esl_address


async def connected(sim: FreeSwitchSimulator, events: Subscription, **kwargs: object) -> SimulatedCall:
    """A simulated call, once the gateway has published its call.initiated."""
    call = await sim.place_call(**kwargs)  # type: ignore[arg-type]
    await next_event(events, CallInitiated, call.uuid)
    return call


async def raw_connected(gateway: Gateway, events: Subscription, **kwargs: Any) -> RawPeer:
    """A hand-driven peer, set up like FreeSWITCH, once the gateway has published its call.initiated."""
    peer = await RawPeer.open(esl_address(gateway), **kwargs)
    await peer.set_up()
    await next_event(events, CallInitiated, peer.uuid)
    return peer


async def answer_succeeds(stubs: Stubs, events: Subscription, session_id: str) -> None:
    envelope = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=session_id), metadata=DEMO_AUTH
    )
    result = await next_event(events, CommandResult, session_id)
    assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")


async def session_state(stubs: Stubs, session_id: str) -> str:
    session = await stubs.sessions.GetSession(
        sessions_pb2.GetSessionRequest(session_id=session_id), metadata=DEMO_AUTH
    )
    return session.state
