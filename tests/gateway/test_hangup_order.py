"""call.hangup carries FreeSWITCH's cause whatever order the hangup frames come in.

Real FreeSWITCH usually sends CHANNEL_HANGUP, the rest of the teardown,
CHANNEL_HANGUP_COMPLETE, then the linger notice. Under load and on shutdown the
notice comes right after CHANNEL_HANGUP; a client that exits at once never sees
the complete event (shared/notes/freeswitch-under-load.md). Each order is played
by the simulator and the webhook a real receiver gets is checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from callcontrol.config import DEMO_APP_ID, DEMO_WEBHOOK_SECRET, GatewayConfig, demo_application
from callcontrol.events import CallHangup, CallInitiated, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator, SimulatedCall
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, make_config, next_event
from tests.webhooks.conftest import Receiver

TEARDOWN = [
    "CHANNEL_UNPARK",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_STATE",
    "CHANNEL_STATE",
    "CHANNEL_HANGUP_COMPLETE",
]
# Long enough that an exit sent on reading the notice is read by the simulator
# before the rest of the teardown is due; the gateway must wait for it.
GAP = 0.3


def _config(receiver: Receiver, linger_wait_ms: int = 1500) -> GatewayConfig:
    cfg = make_config()
    apps = tuple(
        replace(demo_application(), webhook_url=receiver.url) if a.app_id == DEMO_APP_ID else a
        for a in cfg.applications
    )
    esl = replace(cfg.esl, linger_wait_ms=linger_wait_ms)
    return replace(cfg, applications=apps, esl=esl)


@pytest.fixture
def config(request: pytest.FixtureRequest, receiver: Receiver) -> GatewayConfig:
    # "short wait": a gateway that gives CHANNEL_HANGUP_COMPLETE 200 ms after the notice.
    return _config(receiver, 200 if getattr(request, "param", None) == "short wait" else 1500)


async def _hangup_webhook(receiver: Receiver, session_id: str) -> dict[str, Any]:
    """The data of the one call.hangup webhook of that call, its signature checked."""

    def hangups() -> list[dict[str, Any]]:
        verifier = Webhook(DEMO_WEBHOOK_SECRET)
        bodies = [verifier.verify(r.body, r.headers) for r in receiver.requests]
        return [b for b in bodies if b["type"] == "call.hangup" and b["session_id"] == session_id]

    await receiver.wait_for(lambda: bool(hangups()), within=10)
    [body] = hangups()
    data: dict[str, Any] = body["data"]
    return data


async def _placed(sim: FreeSwitchSimulator, events: Subscription, **kwargs: Any) -> SimulatedCall:
    call = await sim.place_call(**kwargs)
    await next_event(events, CallInitiated, call.uuid)
    return call


async def _answer(stubs: Stubs, events: Subscription, call: SimulatedCall) -> None:
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    result = await next_event(events, CommandResult, call.uuid)
    assert result.status == "succeeded"


async def _gateway_hangup(stubs: Stubs, call: SimulatedCall, cause: str) -> None:
    await stubs.commands.Hangup(
        commands_pb2.HangupRequest(session_id=call.uuid, cause=cause), metadata=DEMO_AUTH
    )


# (how the call ends, expected cause, q850_code, sip_code)
ENDINGS = [
    ("caller_bye", "NORMAL_CLEARING", 16, 200),
    ("caller_cancel", "ORIGINATOR_CANCEL", 16, 487),
    ("gateway_user_busy", "USER_BUSY", 17, None),
]


async def _end(ending: str, stubs: Stubs, events: Subscription, call: SimulatedCall) -> None:
    if ending == "caller_bye":
        await _answer(stubs, events, call)
        await call.caller_hangup("NORMAL_CLEARING")
    elif ending == "caller_cancel":
        await call.caller_hangup("ORIGINATOR_CANCEL")
    else:
        await _gateway_hangup(stubs, call, "USER_BUSY")


@pytest.mark.parametrize(("ending", "cause", "q850", "sip"), ENDINGS)
@pytest.mark.parametrize("order", ["complete_first", "notice_first"])
async def test_the_linger_notice_in_either_place_gives_freeswitchs_cause(
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    receiver: Receiver,
    order: str,
    ending: str,
    cause: str,
    q850: int,
    sip: int | None,
) -> None:
    call = await _placed(simulator, events, hangup_order=order, teardown_delay=GAP)

    await _end(ending, stubs, events, call)

    data = await _hangup_webhook(receiver, call.uuid)
    assert data == {"cause": cause, "q850_code": q850, "sip_code": sip, "reason": None}
    await call.wait_closed()
    # The gateway read the whole teardown before it let the call go.
    hangup_at = call.sent.index("CHANNEL_HANGUP")
    expected = [*TEARDOWN, "linger"] if order == "complete_first" else ["linger", *TEARDOWN]
    assert call.sent[hangup_at + 1 :] == [*expected, "disconnect"]  # the last one: exit's goodbye
    assert call.commands[-1].line == "exit"
    assert not call.returned_to_dialplan.is_set()


@pytest.mark.parametrize("config", ["short wait"], indirect=True)
@pytest.mark.parametrize(("ending", "cause", "q850", "sip"), ENDINGS)
async def test_a_complete_event_that_does_not_come_in_time_leaves_channel_hangups_cause(
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    receiver: Receiver,
    ending: str,
    cause: str,
    q850: int,
    sip: int | None,
) -> None:
    call = await _placed(simulator, events, hangup_order="notice_first", teardown_delay=30)

    await _end(ending, stubs, events, call)

    data = await _hangup_webhook(receiver, call.uuid)
    assert data == {"cause": cause, "q850_code": q850, "sip_code": sip, "reason": None}
    await call.wait_closed()
    assert "CHANNEL_HANGUP_COMPLETE" not in call.sent
    assert call.commands[-1].line == "exit"  # released after esl.linger_wait_ms


@pytest.mark.parametrize("ending", ["caller_cancel", "gateway_user_busy"])
async def test_a_close_right_after_channel_hangup_gives_its_cause_and_fails_the_open_answer(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription, receiver: Receiver, ending: str
) -> None:
    call = await _placed(simulator, events, hangup_order="close_after_hangup", answer_completes=False)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await call.wait_for_command(lambda c: c.verb == "sendmsg")

    await _end(ending, stubs, events, call)

    result = await next_event(events, CommandResult, call.uuid, where=lambda r: r.command == "answer")
    assert (result.status, result.reason) == ("failed", "call_hangup")
    data = await _hangup_webhook(receiver, call.uuid)
    expected = {"caller_cancel": ("ORIGINATOR_CANCEL", 16, 487), "gateway_user_busy": ("USER_BUSY", 17, None)}
    cause, q850, sip = expected[ending]
    assert data == {"cause": cause, "q850_code": q850, "sip_code": sip, "reason": None}
    assert call.sent[-1] == "CHANNEL_HANGUP"


async def test_without_linger_the_goodbye_right_after_channel_hangup_gives_its_cause(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription, receiver: Receiver
) -> None:
    # FreeSWITCH refusing `linger` leaves the socket in no-linger mode: the notice
    # after CHANNEL_HANGUP is the goodbye, and the close follows at once.
    call = await _placed(
        simulator, events, hangup_order="notice_first", error_replies={"linger": "-ERR command not found"}
    )
    await _answer(stubs, events, call)
    await call.caller_hangup("NORMAL_CLEARING")

    data = await _hangup_webhook(receiver, call.uuid)
    assert data == {"cause": "NORMAL_CLEARING", "q850_code": 16, "sip_code": 200, "reason": None}
    assert call.sent[-2:] == ["CHANNEL_HANGUP", "disconnect"]


async def test_a_socket_lost_before_any_hangup_event_says_connection_lost(
    simulator: FreeSwitchSimulator, events: Subscription, receiver: Receiver
) -> None:
    call = await _placed(simulator, events)
    await call.drop_socket()
    data = await _hangup_webhook(receiver, call.uuid)
    assert data == {"cause": "UNKNOWN", "q850_code": None, "sip_code": None, "reason": "connection_lost"}


async def test_freeswitch_shutdown_with_notices_before_and_after_the_complete_event(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    receiver: Receiver,
) -> None:
    early = [await _placed(simulator, events, teardown_delay=GAP) for _ in range(3)]  # as captured in 06
    late = [await _placed(simulator, events, hangup_order="complete_first") for _ in range(3)]
    await _answer(stubs, events, early[0])
    await _answer(stubs, events, late[0])

    # FreeSWITCH closes the sockets left ~10 s later; the gateway has let them go by then.
    shutdown = asyncio.create_task(simulator.shutdown_switch(grace=30))
    try:
        for call in early + late:
            data = await _hangup_webhook(receiver, call.uuid)
            assert data == {"cause": "SYSTEM_SHUTDOWN", "q850_code": 16, "sip_code": None, "reason": None}
            await call.wait_closed()
            assert "CHANNEL_HANGUP_COMPLETE" in call.sent
            assert call.commands[-1].line == "exit"  # released by the gateway, before the switch's close
        for call in early:
            assert call.sent.index("linger") < call.sent.index("CHANNEL_HANGUP_COMPLETE")
        assert len(gateway.control.sessions) == 0
    finally:
        shutdown.cancel()


async def test_stopping_the_gateway_while_it_waits_reports_the_cause_it_has(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    lingering = await _placed(
        simulator, events, hangup_order="notice_first", teardown_delay=30, answer_completes=False
    )
    live = await _placed(simulator, events)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=lingering.uuid), metadata=DEMO_AUTH)
    await _gateway_hangup(stubs, lingering, "CALL_REJECTED")
    # CHANNEL_HANGUP fails the open answer: the gateway has read it.
    answer = await next_event(events, CommandResult, lingering.uuid, where=lambda r: r.command == "answer")
    assert answer.reason == "call_hangup"

    await gateway.shutdown()

    hangup = await next_event(events, CallHangup, lingering.uuid)
    assert (hangup.cause, hangup.q850_code, hangup.reason) == ("CALL_REJECTED", 21, "")
    await live.wait_closed()
    assert live.returned_to_dialplan.is_set()  # a live call is handed back, not hung up
    assert not lingering.returned_to_dialplan.is_set()


async def test_a_call_that_hangs_up_while_its_disconnect_is_unanswered_is_reported_hung_up(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription, receiver: Receiver
) -> None:
    # The exit is sent but FreeSWITCH hangs the call up first: its CHANNEL_HANGUP and
    # the close come instead of `+OK bye`. The call did not go back to the dialplan.
    call = await _placed(simulator, events, hangup_order="close_after_hangup", unanswered={"exit"})
    disconnect = await stubs.commands.Disconnect(
        commands_pb2.DisconnectRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )
    await call.wait_for_command(lambda c: c.verb == "exit")

    await call.caller_hangup("NORMAL_CLEARING")

    result = await next_event(events, CommandResult, call.uuid)
    assert (result.operation_id, result.status, result.reason) == (
        disconnect.operation_id,
        "failed",
        "connection_lost",
    )
    data = await _hangup_webhook(receiver, call.uuid)
    assert data == {"cause": "NORMAL_CLEARING", "q850_code": 16, "sip_code": 487, "reason": None}
