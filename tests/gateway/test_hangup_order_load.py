"""Hundreds of calls ending in every way and every frame order FreeSWITCH uses, at once.

Each call's ending and hangup order are fixed up front (a seeded mix), so each
call.hangup can be checked against what the simulated switch reported for it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass

import pytest

from callcontrol.config import Address, EslConfig, GatewayConfig
from callcontrol.events import CallHangup, CallInitiated, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import HANGUP_ORDERS, FreeSwitchSimulator, HangupOrder, SimulatedCall
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, make_config

CALLS = 300
WAVE = 100  # calls set up at once; all of them are up together before any ends


@pytest.fixture
def config() -> GatewayConfig:
    # Hundreds of set-ups at once on a shared 2-core machine: generous reply deadline.
    return make_config(esl=EslConfig(listen=Address("127.0.0.1", 0), reply_timeout_ms=15000))


ORDERS: list[HangupOrder] = list(HANGUP_ORDERS)


@dataclass(frozen=True)
class Plan:
    ending: str  # see ENDINGS
    order: HangupOrder
    teardown_delay: float


# ending → (cause, q850_code, sip_code, reason) the call.hangup must carry
ENDINGS = {
    "caller_bye": ("NORMAL_CLEARING", 16, 200, ""),
    "caller_cancel": ("ORIGINATOR_CANCEL", 16, 487, ""),
    "gateway_busy": ("USER_BUSY", 17, None, ""),
    "gateway_rejected_after_answer": ("CALL_REJECTED", 21, None, ""),
    "socket_lost": ("UNKNOWN", None, None, "connection_lost"),
    "switch_shutdown": ("SYSTEM_SHUTDOWN", 16, None, ""),
}


def _plans() -> list[Plan]:
    rng = random.Random(8)
    endings = list(ENDINGS)
    return [
        Plan(
            ending=endings[n % len(endings)],
            order=ORDERS[(n // len(endings)) % len(ORDERS)],
            teardown_delay=rng.choice([0.0, 0.005, 0.03, 0.2]),
        )
        for n in range(CALLS)
    ]


async def test_every_call_hangup_has_the_cause_freeswitch_gave_whatever_the_order(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    plans = _plans()
    calls: list[SimulatedCall] = []
    for wave in range(0, CALLS, WAVE):
        calls += await asyncio.gather(
            *(
                simulator.place_call(
                    caller_number=str(3000 + n), hangup_order=plan.order, teardown_delay=plan.teardown_delay
                )
                for n, plan in enumerate(plans[wave : wave + WAVE], start=wave)
            )
        )
    by_id = {call.uuid: plan for call, plan in zip(calls, plans, strict=True)}
    hangups: dict[str, list[CallHangup]] = {}
    initiated: set[str] = set()
    all_in = asyncio.Event()
    all_out = asyncio.Event()

    async def collect() -> None:
        async for event in events:
            if isinstance(event, CallInitiated):
                initiated.add(event.session_id)
                if len(initiated) == CALLS:
                    all_in.set()
            elif isinstance(event, CallHangup):
                hangups.setdefault(event.session_id, []).append(event)
                if len(hangups) == CALLS:
                    all_out.set()

    collector = asyncio.create_task(collect())
    await asyncio.wait_for(all_in.wait(), 60)

    async def end(call: SimulatedCall, plan: Plan) -> None:
        if plan.ending in ("caller_bye", "gateway_rejected_after_answer"):
            await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
            await call.wait_state("answered", timeout=30)
        if plan.ending == "caller_bye":
            await call.caller_hangup("NORMAL_CLEARING")
        elif plan.ending == "caller_cancel":
            await call.caller_hangup("ORIGINATOR_CANCEL")
        elif plan.ending in ("gateway_busy", "gateway_rejected_after_answer"):
            cause = "USER_BUSY" if plan.ending == "gateway_busy" else "CALL_REJECTED"
            await stubs.commands.Hangup(
                commands_pb2.HangupRequest(session_id=call.uuid, cause=cause), metadata=DEMO_AUTH
            )
        elif plan.ending == "socket_lost":
            await call.drop_socket()
        if plan.ending not in ("socket_lost", "switch_shutdown"):
            # Hung up on the switch before it shuts down (a hangup command is only queued).
            await asyncio.wait_for(call.hung_up.wait(), 30)

    await asyncio.gather(*(end(call, plan) for call, plan in zip(calls, plans, strict=True)))
    # The calls still up go with the switch; FreeSWITCH's last close comes ~10 s later.
    shutdown = asyncio.create_task(simulator.shutdown_switch(grace=30))
    try:
        await asyncio.wait_for(all_out.wait(), 60)
    finally:
        shutdown.cancel()
        collector.cancel()

    assert set(hangups) == set(by_id)
    wrong = {}
    for session_id, reported in hangups.items():
        plan = by_id[session_id]
        got = [(h.cause, h.q850_code, h.sip_code, h.reason) for h in reported]
        if got != [ENDINGS[plan.ending]]:
            wrong[session_id] = (plan, got)
    assert not wrong, f"{len(wrong)} of {CALLS} calls: {list(wrong.values())[:5]}"
    # The mix really had each order put the notice where the plan said.
    notice_first = [
        c
        for c in calls
        if by_id[c.uuid].order == "notice_first"
        and "linger" in c.sent
        and "CHANNEL_HANGUP_COMPLETE" in c.sent
    ]
    assert all(c.sent.index("linger") < c.sent.index("CHANNEL_HANGUP_COMPLETE") for c in notice_first)
    assert len(notice_first) >= CALLS // 4
    # Every ending met every order.
    assert set(Counter((plan.ending, plan.order) for plan in plans)) == {
        (e, o) for e in ENDINGS for o in ORDERS
    }
    await asyncio.gather(*(c.wait_closed(timeout=30) for c in calls))
    assert len(gateway.control.sessions) == 0
