"""A connection speaks only for the session it owns.

The controller keys calls by Unique-ID, but the Unique-ID is whatever the peer
says: a second socket may claim a live call's, and the dialplan may hand a
channel to the gateway again while its first socket is still closing. What
such a socket says or does (events, notices, its close) must never reach
another socket's session.
"""

from __future__ import annotations

import pytest

from callcontrol.esl.frames import encode_reply
from callcontrol.events import CallAnswered, CallHangup, CallInitiated, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, drain, next_event
from tests.esl_peer import RawPeer
from tests.gateway.calls import answer_succeeds, connected, esl_address, session_state


async def test_a_second_socket_claiming_a_live_calls_unique_id_changes_nothing_of_that_call(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await connected(simulator, events)
    intruder = await RawPeer.open(esl_address(gateway), uuid=call.uuid)
    await intruder.set_up()
    await intruder.expect("exit")  # refused: the call is already connected
    # Everything the intruder says about "its" channel: answered, hung up busy, lingering, gone.
    hangup_cause = (("Hangup-Cause", "USER_BUSY"),)
    intruder.send(intruder.event("CHANNEL_ANSWER"))
    intruder.send(intruder.event("CHANNEL_HANGUP", leading=hangup_cause))
    intruder.send(intruder.event("CHANNEL_HANGUP_COMPLETE", leading=hangup_cause))
    intruder.send(intruder.linger_notice())
    intruder.send(encode_reply("+OK bye"))
    await intruder.finish()

    assert await session_state(stubs, call.uuid) == "ringing"
    assert not [e for e in drain(events) if isinstance(e, CallHangup | CallAnswered)]
    assert [c.line for c in call.commands] == ["connect", "myevents", "linger"]  # no exit on the real one
    await answer_succeeds(stubs, events, call.uuid)
    assert await session_state(stubs, call.uuid) == "answered"
    await call.caller_hangup("NORMAL_CLEARING")
    assert (await next_event(events, CallHangup, call.uuid)).cause == "NORMAL_CLEARING"


async def test_the_old_socket_of_a_disconnected_call_closing_spares_the_calls_new_socket(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    # The dialplan after `socket` may hand the same channel to the gateway again while the
    # first socket is still closing: the first socket's close belongs to the first session.
    first = await RawPeer.open(esl_address(gateway))
    await first.set_up()
    await next_event(events, CallInitiated, first.uuid)
    await stubs.commands.Disconnect(commands_pb2.DisconnectRequest(session_id=first.uuid), metadata=DEMO_AUTH)
    await first.expect("exit")
    first.send(encode_reply("+OK bye"))  # ... and keeps the socket open a little longer
    await next_event(events, CommandResult, first.uuid)

    again = await simulator.place_call(uuid=first.uuid)
    await next_event(events, CallInitiated, first.uuid)
    first.send(first.event("CHANNEL_HANGUP_COMPLETE", leading=(("Hangup-Cause", "USER_BUSY"),)))
    await first.finish()

    assert await session_state(stubs, first.uuid) == "ringing"
    assert not [e for e in drain(events) if isinstance(e, CallHangup)]
    await answer_succeeds(stubs, events, again.uuid)


@pytest.mark.parametrize("unique_id", ["", "not-a-uuid", "../../etc"])
async def test_a_call_whose_unique_id_is_not_a_uuid_goes_back_to_the_dialplan(
    gateway: Gateway, events: Subscription, unique_id: str
) -> None:
    peer = await RawPeer.open(esl_address(gateway), uuid=unique_id)
    await peer.set_up()
    await peer.expect("exit")
    peer.send(encode_reply("+OK bye"))
    await peer.finish()
    assert len(gateway.control.sessions) == 0
    assert not [e for e in drain(events) if isinstance(e, CallInitiated)]
