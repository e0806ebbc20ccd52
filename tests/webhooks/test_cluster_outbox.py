"""Webhooks in a cluster: one Redis outbox, one delivering replica per application, takeover, outages.

Real redis-server (AOF, ``appendfsync always``), real receivers on loopback,
and for the takeover a real replica process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from callcontrol.webhooks import DeliveryStatus, OutboxError, Outcome, WebhookService
from callcontrol.webhooks.leases import Leases
from callcontrol.webhooks.outbox import AttemptRecord, NewDelivery
from callcontrol.webhooks.redis_outbox import RedisOutbox
from tests.redis_server import RedisServer

from .cluster_worker import cluster_config
from .conftest import FAST_RETRY, SECRET_A, Received, Receiver, answered, eventually, initiated, running
from .crash_worker import APP_ID, event_ids, session_of
from .workers import ACK_BEFORE_STALL, PER_SESSION, SESSIONS, start_worker


def _in_emit_order_per_session(ids: list[str], sessions: list[list[str]]) -> None:
    first_seen = list(dict.fromkeys(ids))
    for session in sessions:
        assert [eid for eid in first_seen if eid in session] == session


def _verified(requests: list[Received]) -> dict[str, list[Received]]:
    """Every copy signed and byte-identical per webhook-id; the copies by id."""
    by_id: dict[str, list[Received]] = defaultdict(list)
    for request in requests:
        by_id[request.webhook_id].append(request)
    verifier = Webhook(SECRET_A)
    for eid, copies in by_id.items():
        assert len({c.body for c in copies}) == 1
        for copy in copies:
            assert verifier.verify(copy.body, copy.headers)["id"] == eid
    return by_id


async def _start_replica(
    redis_url: str, url: str, replica: str, log: Path, *extra: str
) -> asyncio.subprocess.Process:
    args = ("--redis", redis_url, "--url", url, "--replica", replica, *extra)
    return await start_worker("cluster_worker", log, *args)


def _service_timing_out_after_1s(redis_server: RedisServer, url: str, replica: str) -> WebhookService:
    """A replica's webhook service whose Redis calls time out after 1 s (its heartbeat)."""
    config = cluster_config(redis_server.url, url, replica)
    cluster = dataclasses.replace(config.cluster, heartbeat_ms=1000, expiry_ms=6000)
    return WebhookService(dataclasses.replace(config, cluster=cluster), retry=FAST_RETRY)


def _text_of(log: Path) -> str:
    return log.read_text()


async def _read_line(proc: asyncio.subprocess.Process, expected: bytes, log: Path) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.strip() == expected, _text_of(log)


@pytest.mark.slow
async def test_a_killed_lease_holder_s_pending_webhooks_are_delivered_by_another_replica(
    tmp_path: Path, receiver: Receiver, redis_server: RedisServer
) -> None:
    stall = asyncio.Event()
    acked = 0

    async def slows_down(_: Received) -> web.StreamResponse:
        nonlocal acked
        if acked >= ACK_BEFORE_STALL:
            await stall.wait()  # never set: these requests die with the replica
        acked += 1
        return web.Response(status=204)

    receiver.behaviour = slows_down
    log_a = tmp_path / "replica-a.log"
    replica_a = await _start_replica(redis_server.url, receiver.url, "replica-a", log_a, "--emit")
    try:
        await _read_line(replica_a, b"holding", log_a)
        await _read_line(replica_a, b"emitted", log_a)
        # Replica B stands by: A holds the lease, so B delivers nothing.
        replica_b = WebhookService(
            cluster_config(redis_server.url, receiver.url, "replica-b"), retry=FAST_RETRY
        )
        async with running(replica_b):
            await receiver.wait_for_count(ACK_BEFORE_STALL + 4, within=20)
            await eventually(lambda: receiver.in_flight == 4, what="4 stalled requests")
            assert replica_b.delivering_apps == frozenset()
            acknowledged = {
                r.event_id for r in replica_b.list_deliveries(APP_ID, DeliveryStatus.DELIVERED, 500)
            }
            seen_before_kill = len(receiver.requests)

            replica_a.send_signal(signal.SIGKILL)
            await replica_a.wait()
            killed_at = time.monotonic()

            async def accepts(_: Received) -> web.StreamResponse:
                return web.Response(status=204)

            receiver.behaviour = accepts
            all_ids = {eid for session in event_ids(SESSIONS, PER_SESSION) for eid in session}
            await receiver.wait_for(lambda: all_ids <= set(receiver.ids()), within=30)
            assert replica_b.delivering_apps == {APP_ID}
            await eventually(
                lambda: not replica_b.list_deliveries(APP_ID, DeliveryStatus.PENDING, 10),
                what="every delivery recorded",
            )
            assert len(replica_b.list_deliveries(APP_ID, DeliveryStatus.DELIVERED, 500)) == len(all_ids)
    finally:
        if replica_a.returncode is None:
            replica_a.kill()
            await replica_a.wait()
    assert replica_a.returncode == -signal.SIGKILL

    requests = receiver.requests
    after_kill = requests[seen_before_kill:]
    resumed = after_kill[0].at - killed_at
    print(f"\ntakeover: first webhook {resumed * 1000:.0f} ms after SIGKILL of the lease holder")
    assert set(receiver.ids()) == all_ids
    assert 0 < len(acknowledged) <= ACK_BEFORE_STALL
    assert not acknowledged & {r.webhook_id for r in after_kill}
    by_id = _verified(requests)
    duplicated = {eid for eid, copies in by_id.items() if len(copies) > 1}
    assert duplicated <= {r.webhook_id for r in requests[:seen_before_kill]} - acknowledged
    _in_emit_order_per_session(receiver.ids(), event_ids(SESSIONS, PER_SESSION))


async def test_any_replica_emits_and_reads_the_holder_delivers_and_a_clean_stop_hands_over(
    receiver: Receiver, redis_server: RedisServer
) -> None:
    a = WebhookService(cluster_config(redis_server.url, receiver.url, "a"), retry=FAST_RETRY)
    b = WebhookService(cluster_config(redis_server.url, receiver.url, "b"), retry=FAST_RETRY)
    sessions = [[f"e-{s}-{n}" for n in range(3)] for s in range(4)]
    async with running(a):
        await eventually(lambda: a.delivering_apps == {APP_ID}, what="a holds the lease")
        async with running(b):
            for n in range(3):
                for s, ids in enumerate(sessions):
                    event = initiated if n == 0 else answered
                    b.emit(event(APP_ID, session_of(s), event_id=ids[n]))
            await receiver.wait_for_count(12)
            assert b.delivering_apps == frozenset()  # a delivered what b emitted
            _in_emit_order_per_session(receiver.ids(), sessions)
            # The Deliveries API reads the shared store from any replica.
            await eventually(
                lambda: len(b.list_deliveries(APP_ID, DeliveryStatus.DELIVERED, 50)) == 12,
                what="12 deliveries recorded",
            )
            record = b.get_delivery(APP_ID, "e-0-0")
            assert record is not None
            assert record.status is DeliveryStatus.DELIVERED
            assert [(x.attempt, x.status_code, x.outcome) for x in record.attempts] == [
                (1, 204, Outcome.DELIVERED)
            ]
            again = b.redeliver(APP_ID, "e-0-0")
            assert again is not None
            assert again.status is DeliveryStatus.PENDING
            await receiver.wait_for_count(13)
            assert receiver.ids()[-1] == "e-0-0"

            # a stops cleanly and gives its lease back: b takes over without waiting for expiry.
            await a.shutdown()
            await eventually(lambda: b.delivering_apps == {APP_ID}, what="b takes the lease")
            b.emit(answered(APP_ID, session_of(9), event_id="after-handover"))
            await receiver.wait_for(lambda: "after-handover" in receiver.ids())


async def test_redis_restarted_mid_stream_loses_nothing_and_says_so(
    receiver: Receiver, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gate = asyncio.Event()

    async def held_until_the_gate_opens(_: Received) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=204)

    receiver.behaviour = held_until_the_gate_opens
    service = WebhookService(cluster_config(redis_server.url, receiver.url, "solo"), retry=FAST_RETRY)
    sessions = [[f"r-{s}-{n}" for n in range(4)] for s in range(5)]
    async with running(service):
        for n in range(4):
            for s, ids in enumerate(sessions):
                service.emit(answered(APP_ID, session_of(s), event_id=ids[n]))
        await eventually(lambda: receiver.in_flight == 4, what="4 attempts in flight")

        redis_server.stop(kill=True)
        service.emit(answered(APP_ID, session_of(7), event_id="during-outage"))
        await service.flush()
        assert service.metrics()["webhook_emit_failures_total"] == 1
        assert "during-outage of crash-app (session" in caplog.text
        assert "NOT stored: storing event during-outage: Redis at" in caplog.text
        assert "is unreachable" in caplog.text
        await eventually(lambda: not service.store_available, what="the outage noticed")
        assert service.delivering_apps == frozenset()
        assert "Redis unreachable" in caplog.text

        redis_server.start()
        await eventually(lambda: service.store_available, within=10, what="Redis back")
        assert "Redis answers again" in caplog.text
        service.emit(answered(APP_ID, session_of(8), event_id="after-restart"))
        gate.set()
        wanted = {eid for ids in sessions for eid in ids} | {"after-restart"}
        await receiver.wait_for(lambda: wanted <= set(receiver.ids()), within=15)
        await eventually(
            lambda: not service.list_deliveries(APP_ID, DeliveryStatus.PENDING, 10),
            what="every delivery recorded",
        )
    assert "during-outage" not in receiver.ids()
    _verified(receiver.requests)
    _in_emit_order_per_session(receiver.ids(), sessions)


async def test_a_replica_without_redis_refuses_to_start_with_a_clear_error(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.stop()
    with pytest.raises(OutboxError, match=r"unreachable"):
        WebhookService(cluster_config(url, "http://127.0.0.1:9/hooks", "lonely"))


def _new(event_id: str, session: str = "s1") -> NewDelivery:
    return NewDelivery(event_id, "call.answered", APP_ID, session, b"{}", 100.0)


def test_only_the_lease_holder_claims_and_records(redis_server: RedisServer) -> None:
    holder = RedisOutbox(redis_server.url, lease_token=lambda app_id: "holder/1")
    stale = RedisOutbox(redis_server.url, lease_token=lambda app_id: "stale/1")
    try:
        holder._redis.set(f"{holder.prefix}lease:{APP_ID}", "holder/1")
        assert stale.add(_new("e1"))
        assert stale.due(APP_ID, 1000.0, 10) == []
        head = holder.due(APP_ID, 1000.0, 10)[0]
        attempt = AttemptRecord(1, 200.0, "http://r", 204, "", 1.0, Outcome.DELIVERED)
        with pytest.raises(OutboxError, match="no longer holds the lease"):
            stale.record_attempt(head.seq, attempt, last_error="")
        record = holder.get(APP_ID, "e1")
        assert record is not None
        assert (record.status, record.attempts) == (DeliveryStatus.PENDING, ())
        holder.record_attempt(head.seq, attempt, last_error="")
        holder.record_attempt(head.seq, attempt, last_error="")  # a repeat after a lost reply
        record = holder.get(APP_ID, "e1")
        assert record is not None
        assert record.status is DeliveryStatus.DELIVERED
        assert len(record.attempts) == 1
    finally:
        holder.close()
        stale.close()


def test_an_acknowledged_event_survives_redis_being_killed(redis_server: RedisServer) -> None:
    outbox = RedisOutbox(redis_server.url)
    try:
        assert outbox.add(_new("kept"))
        redis_server.stop(kill=True)
        with pytest.raises(OutboxError, match="unreachable"):
            outbox.add(_new("lost"))
        redis_server.start()
        record = outbox.get(APP_ID, "kept")
        assert record is not None
        assert record.status is DeliveryStatus.PENDING
        assert outbox.get(APP_ID, "lost") is None
    finally:
        outbox.close()


async def test_an_expired_lease_is_taken_and_the_old_holder_learns_it(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    woken: list[tuple[str, str]] = []

    def leases(name: str) -> Leases:
        return Leases(
            redis_server.url,
            prefix="t:",
            replica_id=name,
            apps=["x", "y"],
            heartbeat_s=0.05,
            expiry_s=0.3,
            on_wake=lambda app: woken.append((name, app)),
        )

    first, second = leases("first"), leases("second")
    try:
        await first.tick()
        await second.tick()
        assert first.held == {"x", "y"}
        assert second.held == frozenset()
        assert first.token_for("x") == first.token
        assert second.token_for("x") is None
        # first stops renewing (paused, partitioned, dead): second takes over after expiry.
        deadline = time.monotonic() + 5
        while second.held != {"x", "y"}:
            assert time.monotonic() < deadline, "the lease never moved"
            await asyncio.sleep(0.05)
            await second.tick()
        assert first.token_for("x") is None  # its own clock says it can no longer trust it
        await first.tick()
        assert first.held == frozenset()
        await second.release()
        await first.tick()
        assert first.held == {"x", "y"}
        assert ("second", "x") in woken
        assert ("first", "y") in woken
    finally:
        await first.aclose()
        await second.aclose()


def test_a_hung_redis_fails_calls_after_the_timeout_and_they_work_once_it_answers(
    redis_server: RedisServer,
) -> None:
    outbox = RedisOutbox(redis_server.url, timeout_s=0.2)
    try:
        assert outbox.add(_new("before"))
        with redis_server.paused(), pytest.raises(OutboxError, match="did not answer in time"):
            outbox.add(_new("while-hung"))
        deadline = time.monotonic() + 5
        while True:
            try:
                assert outbox.add(_new("after"))
                break
            except OutboxError:
                assert time.monotonic() < deadline, "Redis never answered again"
                time.sleep(0.05)
        record = outbox.get(APP_ID, "before")
        assert record is not None
        assert record.status is DeliveryStatus.PENDING
    finally:
        outbox.close()


async def test_the_holder_starts_an_event_stored_by_another_replica_without_waiting_for_a_heartbeat(
    receiver: Receiver, redis_server: RedisServer
) -> None:
    def slow_heartbeat(replica: str) -> WebhookService:
        config = cluster_config(redis_server.url, receiver.url, replica)
        cluster = dataclasses.replace(config.cluster, heartbeat_ms=60_000, expiry_ms=180_000)
        return WebhookService(dataclasses.replace(config, cluster=cluster), retry=FAST_RETRY)

    holder, emitter = slow_heartbeat("holder"), slow_heartbeat("emitter")
    probe = RedisOutbox(redis_server.url)
    try:
        async with running(holder):
            await eventually(lambda: holder.delivering_apps == {APP_ID}, what="the lease taken")
            channel = f"{probe.prefix}wake"
            await eventually(
                lambda: dict(probe._redis.pubsub_numsub(channel)).get(channel.encode()) == 1,
                what="the holder listening",
            )
            # Idle longer than the socket timeout (1 s here): the subscription must outlive it.
            await asyncio.sleep(1.5)
            assert dict(probe._redis.pubsub_numsub(channel)).get(channel.encode()) == 1
            # The holder's lane sleeps with nothing due; only the wake-up can start it now.
            emitter.emit(answered(APP_ID, session_of(1), event_id="from-the-other-replica"))
            await receiver.wait_for(lambda: receiver.ids() == ["from-the-other-replica"], within=10)
    finally:
        emitter.close()
        probe.close()


async def test_a_replica_whose_lease_is_taken_stops_its_attempts_in_flight(
    receiver: Receiver, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    never = asyncio.Event()

    async def hangs(_: Received) -> web.StreamResponse:
        await never.wait()
        return web.Response(status=204)

    receiver.behaviour = hangs
    service = WebhookService(cluster_config(redis_server.url, receiver.url, "paused"), retry=FAST_RETRY)
    probe = RedisOutbox(redis_server.url)
    try:
        async with running(service):
            await eventually(lambda: service.delivering_apps == {APP_ID}, what="the lease taken")
            service.emit(answered(APP_ID, session_of(1), event_id="in-flight"))
            await receiver.wait_for(lambda: receiver.in_flight == 1)
            # As if this replica had been cut off long enough for another to take over.
            probe._redis.set(f"{probe.prefix}lease:{APP_ID}", "another-replica/1")
            await eventually(lambda: receiver.in_flight == 0, what="the attempt cancelled")
            assert service.delivering_apps == frozenset()
            assert "taken by another replica" in caplog.text
            record = probe.get(APP_ID, "in-flight")
            assert record is not None
            assert (record.status, record.attempts) == (DeliveryStatus.PENDING, ())
    finally:
        probe.close()


def test_redis_settings_that_can_lose_webhooks_are_warned_about(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = cluster_config(redis_server.url, "http://127.0.0.1:9/hooks", "careful")
    WebhookService(config).close()
    assert "Redis at cluster.redis_url" not in caplog.text  # AOF, fsync always, noeviction
    probe = RedisOutbox(redis_server.url)
    try:
        probe._redis.config_set("appendonly", "no")
        probe._redis.config_set("maxmemory-policy", "allkeys-lru")
        WebhookService(config).close()
    finally:
        probe.close()
    assert "appendonly is no" in caplog.text
    assert "maxmemory-policy is allkeys-lru" in caplog.text


async def test_a_paused_redis_does_not_hold_the_loop_and_the_event_counts_once_acknowledged(
    redis_server: RedisServer,
) -> None:
    # Redis calls time out after 1 s: far longer than the loop turns below.
    service = _service_timing_out_after_1s(redis_server, "http://127.0.0.1:9/hooks", "calm")
    try:
        service.emit(answered(APP_ID, session_of(1), event_id="before"))
        await service.flush()
        assert service.metrics()["webhook_events_stored_total"] == 1
        with redis_server.paused():
            service.emit(answered(APP_ID, session_of(1), event_id="while-paused"))
            ticks = 0
            for _ in range(5):  # the loop goes on turning while the event waits for Redis
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 5
            # Not counted yet: stored only once Redis has acknowledged it. (The counters
            # themselves: a whole scrape would read the queue depth from the paused Redis.)
            assert service._metrics.events_stored._value.get() == 1
            assert service._metrics.emit_failures._value.get() == 0
        await service.flush()
        assert service.metrics()["webhook_events_stored_total"] == 2
        assert service.metrics()["webhook_emit_failures_total"] == 0
        record = service.get_delivery(APP_ID, "while-paused")
        assert record is not None
        assert record.status is DeliveryStatus.PENDING
    finally:
        service.close()


async def test_events_of_one_loop_turn_share_a_round_trip_and_keep_their_order(
    redis_server: RedisServer,
) -> None:
    service = WebhookService(cluster_config(redis_server.url, "http://127.0.0.1:9/hooks", "batch"))
    probe = RedisOutbox(redis_server.url)
    try:
        before = int(probe._redis.info("stats")["total_reads_processed"])
        ids = [f"burst-{n}" for n in range(200)]
        for event_id in ids:
            service.emit(answered(APP_ID, session_of(n := int(event_id[6:]) % 3), event_id=event_id))
        del n
        await service.flush()
        assert service.metrics()["webhook_events_stored_total"] == 200
        # Redis read its clients' sockets a few times (this probe's INFO included), not once per event.
        reads = int(probe._redis.info("stats")["total_reads_processed"]) - before
        assert reads < 200 / 4
        listed = probe.list_deliveries(APP_ID, DeliveryStatus.PENDING, 500)
        assert [r.event_id for r in reversed(listed)] == ids
    finally:
        service.close()
        probe.close()


async def test_an_attempt_is_recorded_off_the_loop_and_its_delivery_not_claimed_until_redis_has_it(
    redis_server: RedisServer,
) -> None:
    token = {"value": "holder/1"}
    outbox = RedisOutbox(redis_server.url, timeout_s=1.0, lease_token=lambda app_id: token["value"])
    recorded: list[str] = []
    outbox.set_recorded_callback(recorded.append)
    try:
        outbox._redis.set(f"{outbox.prefix}lease:{APP_ID}", "holder/1")
        assert outbox.add(_new("first"))
        assert outbox.add(_new("second"))  # same session: due only once the first is finished
        (head,) = outbox.due(APP_ID, 1000.0, 10)
        delivered = AttemptRecord(1, 200.0, "http://r", 204, "", 1.0, Outcome.DELIVERED)
        with redis_server.paused():
            outbox.record_attempt(head.seq, delivered, last_error="")  # returns while Redis is paused
            for _ in range(3):
                await asyncio.sleep(0.01)  # the loop goes on turning
            assert recorded == []
            # Not claimable again before Redis has the outcome (here: not even asked).
            assert outbox._excluded(APP_ID, ()) == [head.seq]
        await outbox.flush()
        assert recorded == [APP_ID]
        record = outbox.get(APP_ID, "first")
        assert record is not None
        assert (record.status, len(record.attempts)) == (DeliveryStatus.DELIVERED, 1)
        (nxt,) = outbox.due(APP_ID, 1000.0, 10)
        assert nxt.event_id == "second"

        # A record Redis refuses (the lease moved on) fails the lane's next claim, once.
        token["value"] = "stale/1"
        outbox.record_attempt(nxt.seq, dataclasses.replace(delivered, attempt=1), last_error="")
        await outbox.flush()
        with pytest.raises(OutboxError, match="no longer holds the lease"):
            outbox.due(APP_ID, 1000.0, 10)
        token["value"] = "holder/1"
        assert [d.event_id for d in outbox.due(APP_ID, 1000.0, 10)] == ["second"]  # still pending
    finally:
        outbox.close()


async def test_a_metrics_scrape_does_not_wait_on_a_paused_redis(
    receiver: Receiver, redis_server: RedisServer
) -> None:
    never = asyncio.Event()

    async def holds(_: Received) -> web.StreamResponse:
        await never.wait()
        return web.Response(status=204)

    receiver.behaviour = holds
    # Redis calls time out after 1 s: a scrape that asked Redis would wait that long, then say NaN.
    service = _service_timing_out_after_1s(redis_server, receiver.url, "scraped")
    async with running(service):
        for n in range(3):
            service.emit(answered(APP_ID, session_of(n), event_id=f"held-{n}"))
        await eventually(lambda: service.metrics()["webhook_queue_depth"] == 3, what="the depth read")
        with redis_server.paused():
            metrics = service.metrics()  # the depth as of the last heartbeat, without asking Redis
        never.set()
    assert metrics["webhook_queue_depth"] == 3
    assert metrics["webhook_oldest_pending_age_seconds"] >= 0


async def test_a_lane_claiming_from_a_paused_redis_does_not_hold_the_loop(
    receiver: Receiver, redis_server: RedisServer
) -> None:
    # Redis calls time out after 1 s: a claim made on the loop would hold it that long.
    service = _service_timing_out_after_1s(redis_server, receiver.url, "claimer")
    async with running(service):
        await eventually(lambda: service.delivering_apps == {APP_ID}, what="the lease taken")
        with redis_server.paused():
            service._dispatcher.wake(APP_ID)  # its lane claims, and Redis does not answer
            started = time.monotonic()
            for _ in range(5):
                await asyncio.sleep(0.01)
            held = time.monotonic() - started
        service.emit(answered(APP_ID, session_of(1), event_id="after-the-pause"))
        await receiver.wait_for(lambda: receiver.ids() == ["after-the-pause"], within=10)
    assert held < 0.5


async def test_a_claim_answered_after_its_lease_went_starts_nothing(redis_server: RedisServer) -> None:
    token: dict[str, str | None] = {"value": "holder/1"}
    outbox = RedisOutbox(redis_server.url, timeout_s=1.0, lease_token=lambda app_id: token["value"])
    try:
        outbox._redis.set(f"{outbox.prefix}lease:{APP_ID}", "holder/1")
        assert outbox.add(_new("first"))
        with redis_server.paused():
            claim = asyncio.create_task(outbox.claim(APP_ID, 1000.0, 10, ()))
            await asyncio.sleep(0)  # on its way to Redis
            token["value"] = None  # the lease went meanwhile (its lane was abandoned)
        assert (await claim).due == ()
        token["value"] = "holder/1"
        assert [d.event_id for d in (await outbox.claim(APP_ID, 1000.0, 10, ())).due] == ["first"]
    finally:
        outbox.close()
