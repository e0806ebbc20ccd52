"""Headline: kill -9 of the replica holding answered calls AND the webhook lease with events pending.

A survivor adopts the calls and takes the lease; once the receiver is healthy
again every event arrives, same ``webhook-id`` on repeats, each call's in
order, none invented by the adoption. Failover times are printed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import grpc
import redis.asyncio as aredis
from aiohttp import web

from callcontrol.config import DEMO_APP_ID
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.simulator.call import SimulatedCall
from callcontrol.v1 import commands_pb2, deliveries_pb2, deliveries_pb2_grpc, sessions_pb2
from callcontrol.webhooks.redis_outbox import DEFAULT_PREFIX
from tests.cluster.replicas import ReplicaProcess, replica_group, retry_grpc
from tests.conftest import DEMO_AUTH
from tests.redis_server import RedisServer
from tests.webhooks.conftest import Received, Receiver, eventually


class Flaky:
    """The receiver's behaviour: 503 until ``healthy``; keeps what it acknowledged."""

    def __init__(self) -> None:
        self.healthy = False
        self.accepted: list[Received] = []

    async def __call__(self, received: Received) -> web.StreamResponse:
        if not self.healthy:
            return web.Response(status=503)
        self.accepted.append(received)
        return web.Response(status=204)

    def types_by_call(self) -> dict[str, Counter[str]]:
        seen: dict[str, dict[str, str]] = defaultdict(dict)
        for r in self.accepted:
            seen[r.payload["session_id"]][r.webhook_id] = r.payload["type"]
        return {sid: Counter(types.values()) for sid, types in seen.items()}


async def _lease_taken(redis_url: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    client = aredis.from_url(redis_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await client.exists(f"{DEFAULT_PREFIX}lease:{DEMO_APP_ID}"):
                    return
                await asyncio.sleep(0.05)  # polling Redis: the lease loop announces nothing
    finally:
        await client.aclose()


async def _pending(replica: ReplicaProcess) -> list[deliveries_pb2.Delivery]:
    stub = deliveries_pb2_grpc.DeliveriesStub(replica.channel)
    listed = await stub.ListDeliveries(
        deliveries_pb2.ListDeliveriesRequest(status="pending", page_size=100), metadata=DEMO_AUTH
    )
    return list(listed.deliveries)


async def test_kill_9_with_answered_calls_and_pending_webhooks(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    flaky = Flaky()
    receiver.behaviour = flaky
    async with replica_group() as start:
        a = await start(tmp_path, "a", redis_server.url, receiver.url)
        await _lease_taken(redis_server.url)  # a delivers this application's webhooks
        b = await start(tmp_path, "b", redis_server.url, receiver.url)
        sim = FreeSwitchSimulator(*a.esl)
        try:
            await _failover(a, b, sim, receiver, flaky)
        finally:
            await sim.close()


async def _failover(
    a: ReplicaProcess, b: ReplicaProcess, sim: FreeSwitchSimulator, receiver: Receiver, flaky: Flaky
) -> None:
    calls: list[SimulatedCall] = []
    for _ in range(2):
        call = await sim.place_call(gateway=a.esl, next_sockets=[b.esl])
        calls.append(call)
        await retry_grpc(
            lambda uuid=call.uuid: b.stubs.sessions.GetSession(  # type: ignore[misc]
                sessions_pb2.GetSessionRequest(session_id=uuid), metadata=DEMO_AUTH
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        await a.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await asyncio.gather(*(asyncio.wait_for(call.answered.wait(), 10) for call in calls))

    # Every event of the answered calls is stored and pending (the receiver says 503).
    expected = {"call.initiated", "command.result", "call.answered"}
    pending: list[deliveries_pb2.Delivery] = []

    def stored() -> bool:
        return all({d.event_type for d in pending if d.session_id == call.uuid} == expected for call in calls)

    async with asyncio.timeout(10):
        while not stored():
            pending = await _pending(b)
            await asyncio.sleep(0.05)  # polling the outbox listing: nothing announces a store
    await receiver.wait_for(lambda: len(receiver.requests) >= 1, within=10)  # a tried and failed
    assert len(pending) == 3 * len(calls)
    pending_ids = {d.delivery_id for d in pending}

    killed = time.monotonic()
    a.proc.send_signal(signal.SIGKILL)
    assert await a.proc.wait() == -signal.SIGKILL
    await asyncio.gather(*(call.wait_connections(2, timeout=10) for call in calls))
    # A command through b works once b has adopted the call (UNAVAILABLE until then).
    first, second = calls
    envelope = await retry_grpc(
        lambda: b.stubs.commands.Hangup(
            commands_pb2.HangupRequest(session_id=first.uuid), metadata=DEMO_AUTH
        ),
        grpc.StatusCode.UNAVAILABLE,
    )
    commands_work = time.monotonic() - killed
    assert envelope.status == "in_progress"
    adopted = await retry_grpc(
        lambda: b.stubs.sessions.GetSession(
            sessions_pb2.GetSessionRequest(session_id=second.uuid), metadata=DEMO_AUTH
        ),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert adopted.state == "answered"
    await asyncio.wait_for(first.hung_up.wait(), 10)

    flaky.healthy = True
    healthy_at = time.monotonic() - killed
    want = {
        first.uuid: Counter({"call.initiated": 1, "command.result": 2, "call.answered": 1, "call.hangup": 1}),
        second.uuid: Counter({"call.initiated": 1, "command.result": 1, "call.answered": 1}),
    }
    # Backoff of the failed attempts (full jitter from 1 s) bounds how soon they come.
    await eventually(lambda: flaky.types_by_call() == want, within=60, what="every event delivered")
    first_delivery = min(r.at for r in flaky.accepted) - killed
    assert pending_ids <= {r.webhook_id for r in flaky.accepted}

    # Final hangup of the second call through b: its command.result and call.hangup follow.
    await b.stubs.commands.Hangup(commands_pb2.HangupRequest(session_id=second.uuid), metadata=DEMO_AUTH)
    await asyncio.wait_for(second.hung_up.wait(), 10)
    want[second.uuid] = Counter(
        {"call.initiated": 1, "command.result": 2, "call.answered": 1, "call.hangup": 1}
    )
    await eventually(lambda: flaky.types_by_call() == want, within=30, what="the hangup delivered")

    # A repeat (a's attempt in flight when killed, say) carries the same id and the same body.
    bodies: dict[str, bytes] = {}
    for r in receiver.requests:
        assert bodies.setdefault(r.webhook_id, r.body) == r.body
    # Each call's events arrived in the order they happened (first acknowledgement per id).
    for call in calls:
        firsts: dict[str, Received] = {}
        for r in flaky.accepted:
            if r.payload["session_id"] == call.uuid:
                firsts.setdefault(r.webhook_id, r)
        types = [r.payload["type"] for r in firsts.values()]
        assert types[0] == "call.initiated", types
        assert types[-1] == "call.hangup", types
        occurred = [r.payload["occurred_at"] for r in firsts.values()]
        assert occurred == sorted(occurred), types
        assert call.connections == [a.esl, b.esl]
        assert not call.returned_to_dialplan.is_set()
    print(
        f"\nfailover with {len(calls)} answered calls and {len(pending)} pending webhooks: "
        f"kill -9 → commands work {commands_work * 1000:.0f} ms, "
        f"→ first webhook delivered {first_delivery * 1000:.0f} ms "
        f"(receiver healthy again at {healthy_at * 1000:.0f} ms)"
    )
