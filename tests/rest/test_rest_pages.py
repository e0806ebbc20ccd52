"""Every list at its documented largest page, through the real Envoy."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from callcontrol.config import Address, GatewayConfig, demo_application
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.validation import MAX_PAGE_SIZE
from tests.conftest import make_config
from tests.rest.conftest import RestClient, eventually


@pytest.fixture
def config(refused_port: Address) -> GatewayConfig:
    # Every event waits, pending, for a receiver that never answers: a page of deliveries.
    base = make_config()
    hooked = demo_application(webhook_url=f"http://{refused_port}/hooks")
    # A generous ESL deadline: setting up 1000 calls on a loaded machine is slow.
    esl = replace(base.esl, reply_timeout_ms=20_000)
    return replace(base, esl=esl, applications=(hooked, *base.applications[1:]))


async def test_sessions_and_deliveries_list_a_full_page_of_1000(
    gateway: Gateway, simulator: FreeSwitchSimulator, rest: RestClient
) -> None:
    # In batches, each set up before the next, so a loaded machine stays inside the
    # gateway's ESL reply deadline.
    batch = 50
    for start in range(0, MAX_PAGE_SIZE, batch):
        await asyncio.gather(
            *(
                simulator.place_call(caller_number=f"+4930{n:09d}", caller_name=f"Caller {n}")
                for n in range(start, start + batch)
            )
        )

        async def batch_visible(count: int = start + batch) -> bool:
            return len(gateway.control.sessions) >= count

        await eventually(batch_visible, f"{start + batch} sessions", within=30)

    # Was 500 response_buffer_size_limit_reached: Envoy buffers a unary response
    # whole to transcode it, and the cap was the 64 KiB connection buffer.
    sessions = await rest.get(f"/api/v1/sessions?page_size={MAX_PAGE_SIZE}")
    deliveries = await rest.get(f"/api/v1/webhooks/deliveries?status=pending&page_size={MAX_PAGE_SIZE}")

    assert sessions.status == 200, sessions.body[:300]
    assert len(sessions.json()["sessions"]) == MAX_PAGE_SIZE
    assert len(sessions.body) > 64 * 1024
    assert deliveries.status == 200, deliveries.body[:300]
    assert len(deliveries.json()["deliveries"]) == MAX_PAGE_SIZE
