"""The simulator's command line can make FreeSWITCH slow or silent about an answer."""

from __future__ import annotations

import asyncio

import pytest

from callcontrol.config import GatewayConfig, OperationsConfig
from callcontrol.events import CallAnswered, CallInitiated, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator.__main__ import _parser, run
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, make_config, next_event


@pytest.fixture
def config() -> GatewayConfig:
    return make_config(operations=OperationsConfig(timeout_ms=200))


async def _place(gateway: Gateway, events: Subscription, *flags: str) -> tuple[str, asyncio.Task[int]]:
    assert gateway.esl_address is not None
    args = _parser().parse_args(["--gateway", str(gateway.esl_address), "--hold", "3", *flags])
    task = asyncio.create_task(run(args))
    initiated = await next_event(events, CallInitiated)
    return initiated.session_id, task


async def test_answer_never_completes(gateway: Gateway, stubs: Stubs, events: Subscription) -> None:
    session_id, task = await _place(gateway, events, "--answer-never-completes")
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=session_id), metadata=DEMO_AUTH)
    result = await next_event(events, CommandResult, session_id)
    assert (result.status, result.reason) == ("timed_out", "timeout")
    # The caller hangs up after --hold; nothing ever confirmed the answer.
    assert await asyncio.wait_for(task, 10) == 0
    assert not [e for e in _drain(events) if isinstance(e, CallAnswered)]


async def test_answer_delay(gateway: Gateway, stubs: Stubs, events: Subscription) -> None:
    # A delay longer than the 200 ms deadline: the answer times out, then is confirmed late.
    session_id, task = await _place(gateway, events, "--answer-delay", "0.6")
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=session_id), metadata=DEMO_AUTH)
    result = await next_event(events, CommandResult, session_id)
    assert result.status == "timed_out"
    await next_event(events, CallAnswered, session_id)
    assert await asyncio.wait_for(task, 10) == 0


def _drain(events: Subscription) -> list[object]:
    out: list[object] = []
    while (event := events.get_nowait()) is not None:
        out.append(event)
    return out


@pytest.mark.parametrize("value", ["-1", "soon", "1e9"])
def test_a_bad_delay_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--answer-delay", value])
    assert "--answer-delay" in capsys.readouterr().err
