"""One socket flooding the gateway with events does not hold up the other calls."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest

from callcontrol.events import CallAnswered, CallHangup, CallInitiated, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, next_event

ROOT = Path(__file__).resolve().parents[2]


async def _start_flood(gateway: Gateway, session_id: str) -> asyncio.subprocess.Process:
    assert gateway.esl_address is not None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), str(ROOT)])}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.gateway.flood_peer",
        gateway.esl_address.host,
        str(gateway.esl_address.port),
        session_id,
        "--seconds",
        "30",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
async def test_a_socket_flooding_events_does_not_delay_other_calls_commands_or_events(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    flood_id = str(uuid.uuid4())
    flood = await _start_flood(gateway, flood_id)
    try:
        assert flood.stdout is not None
        assert await asyncio.wait_for(flood.stdout.readline(), 10) == b"ready\n"
        await next_event(events, CallInitiated, flood_id)

        # While it floods: new calls arrive, commands are answered within the 2 s answer
        # deadline, and events (answers confirmed, a caller hanging up) come through.
        calls = []
        for _ in range(3):
            call = await simulator.place_call()
            await next_event(events, CallInitiated, call.uuid)
            calls.append(call)
        for call in calls:
            envelope = await stubs.commands.Answer(
                commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
            await next_event(events, CallAnswered, call.uuid)  # published before the result
            result = await next_event(events, CommandResult, call.uuid)
            assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")
        await calls[0].caller_hangup("NORMAL_CLEARING")
        assert (await next_event(events, CallHangup, calls[0].uuid)).cause == "NORMAL_CLEARING"

        assert flood.returncode is None, "the flood ended before the other calls were served"
    finally:
        if flood.returncode is None:
            flood.kill()
        await flood.wait()
