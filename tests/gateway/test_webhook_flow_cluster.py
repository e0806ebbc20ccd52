"""A gateway in cluster mode stores its webhooks in Redis and delivers them like a single gateway."""

from __future__ import annotations

from dataclasses import replace

import pytest
from standardwebhooks.webhooks import Webhook

from callcontrol.config import (
    DEMO_APP_ID,
    DEMO_WEBHOOK_SECRET,
    ClusterConfig,
    GatewayConfig,
    demo_application,
)
from callcontrol.events import CallInitiated, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from callcontrol.webhooks import DeliveryStatus
from callcontrol.webhooks.redis_outbox import RedisOutbox
from tests.conftest import DEMO_AUTH, Stubs, make_config, next_event
from tests.redis_server import RedisServer
from tests.webhooks.conftest import Receiver


@pytest.fixture
def config(receiver: Receiver, redis_server: RedisServer) -> GatewayConfig:
    cfg = make_config(cluster=ClusterConfig(redis_url=redis_server.url, replica_id="gw-1", heartbeat_ms=200))
    apps = tuple(
        replace(demo_application(), webhook_url=receiver.url) if a.app_id == DEMO_APP_ID else a
        for a in cfg.applications
    )
    return replace(cfg, applications=apps)


async def test_a_call_s_webhooks_go_through_redis_in_order(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    receiver: Receiver,
    redis_server: RedisServer,
) -> None:
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await receiver.wait_for(lambda: len(receiver.requests) >= 3)
    await stubs.commands.Hangup(
        commands_pb2.HangupRequest(session_id=call.uuid, cause="USER_BUSY", command_uid="h-1"),
        metadata=DEMO_AUTH,
    )
    await receiver.wait_for(lambda: len(receiver.requests) >= 5)
    assert [r.payload["type"] for r in receiver.requests] == [
        "call.initiated",
        "call.answered",
        "command.result",
        "command.result",
        "call.hangup",
    ]
    verifier = Webhook(DEMO_WEBHOOK_SECRET)
    assert [verifier.verify(r.body, r.headers)["id"] for r in receiver.requests] == receiver.ids()
    # The store is the shared one: another replica (here a bare reader) sees the same deliveries.
    reader = RedisOutbox(redis_server.url)
    try:
        stored = {r.event_id for r in reader.list_deliveries(DEMO_APP_ID, DeliveryStatus.PENDING, 10)}
        stored |= {r.event_id for r in reader.list_deliveries(DEMO_APP_ID, DeliveryStatus.DELIVERED, 10)}
    finally:
        reader.close()
    assert stored == set(receiver.ids())
    assert gateway.webhooks.delivering_apps == {DEMO_APP_ID}
