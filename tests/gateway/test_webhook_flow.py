"""Webhooks from a real gateway to a real receiver: what arrives, signed, and when."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from standardwebhooks.webhooks import Webhook

from callcontrol.config import DEMO_APP_ID, DEMO_WEBHOOK_SECRET, GatewayConfig, demo_application
from callcontrol.events import CallInitiated, Subscription
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, make_config, next_event
from tests.webhooks.conftest import Receiver


@pytest.fixture
def config(receiver: Receiver) -> GatewayConfig:
    cfg = make_config()
    apps = tuple(
        replace(demo_application(), webhook_url=receiver.url) if a.app_id == DEMO_APP_ID else a
        for a in cfg.applications
    )
    return replace(cfg, applications=apps)


def _types(receiver: Receiver, session_id: str) -> list[str]:
    return [r.payload["type"] for r in receiver.requests if r.payload["session_id"] == session_id]


async def test_answer_then_hangup_deliver_signed_events_in_the_spec_order(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription, receiver: Receiver
) -> None:
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)

    answer = await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await receiver.wait_for(lambda: len(_types(receiver, call.uuid)) >= 3)
    hangup = await stubs.commands.Hangup(
        commands_pb2.HangupRequest(session_id=call.uuid, cause="USER_BUSY", command_uid="h-1"),
        metadata=DEMO_AUTH,
    )
    await receiver.wait_for(lambda: len(_types(receiver, call.uuid)) >= 5)

    assert _types(receiver, call.uuid) == [
        "call.initiated",
        "call.answered",  # on execute-complete
        "command.result",  # answer: on execute-complete
        "command.result",  # hangup: right after dispatch
        "call.hangup",  # on teardown
    ]
    verifier = Webhook(DEMO_WEBHOOK_SECRET)
    bodies = [verifier.verify(r.body, r.headers) for r in receiver.requests]
    assert [b["id"] for b in bodies] == [r.headers["webhook-id"] for r in receiver.requests]
    results = [b for b in bodies if b["type"] == "command.result"]
    assert [(r["data"]["operation_id"], r["data"]["command"], r["data"]["status"]) for r in results] == [
        (answer.operation_id, "answer", "succeeded"),
        (hangup.operation_id, "hangup", "succeeded"),
    ]
    assert results[1]["data"]["command_uid"] == "h-1"
    final = bodies[-1]
    assert (final["type"], final["app_id"], final["data"]["cause"], final["data"]["q850_code"]) == (
        "call.hangup",
        DEMO_APP_ID,
        "USER_BUSY",
        17,
    )
    assert all(json.loads(r.body)["occurred_at"].endswith("Z") for r in receiver.requests)


async def test_answer_timeout_is_delivered_as_timed_out_after_2s(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription, receiver: Receiver
) -> None:
    call = await simulator.place_call(answer_completes=False)
    await next_event(events, CallInitiated, call.uuid)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await receiver.wait_for(lambda: "command.result" in _types(receiver, call.uuid), within=5)
    [result] = [r for r in receiver.requests if r.payload["type"] == "command.result"]
    [initiated] = [r for r in receiver.requests if r.payload["type"] == "call.initiated"]
    assert result.payload["data"]["status"] == "timed_out"
    assert result.at - initiated.at >= 1.95
    assert "call.answered" not in _types(receiver, call.uuid)
