"""WebhookService against a real aiohttp receiver on loopback: signing, retries, order, isolation."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from callcontrol.config import Application, hash_api_key
from callcontrol.events import LifecycleEvent
from callcontrol.webhooks import DeliveryStatus, RedeliverRefused, RetryPolicy, WebhookService

from .conftest import (
    FAST_RETRY,
    SECRET_A,
    SECRET_B,
    Received,
    Receiver,
    accept,
    answered,
    app,
    command_result,
    eventually,
    hangup,
    hook_config,
    initiated,
    respond,
    running,
    session_id,
)


def _call(app_id: str, session: str | None = None) -> list[LifecycleEvent]:
    s = session or session_id()
    return [
        initiated(app_id, s),
        answered(app_id, s),
        command_result(app_id, s),
        hangup(app_id, s, q850_code=16),
    ]


def _status(service: WebhookService, app_id: str, event_id: str) -> DeliveryStatus | None:
    record = service.get_delivery(app_id, event_id)
    return None if record is None else record.status


async def test_every_webhook_verifies_with_standardwebhooks(receiver: Receiver) -> None:
    service = WebhookService(hook_config(app("a", receiver.url, SECRET_A)), retry=FAST_RETRY)
    events = _call("a")
    async with running(service):
        for event in events:
            service.emit(event)
        requests = await receiver.wait_for_count(4)
    verifier = Webhook(SECRET_A)
    for event, request in zip(events, requests, strict=True):
        payload = verifier.verify(request.body, request.headers)
        assert payload["id"] == event.event_id == request.webhook_id
        assert payload["type"] == event.type
        assert request.headers["content-type"] == "application/json"
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60


async def test_two_secrets_sign_twice_and_either_secret_verifies(receiver: Receiver) -> None:
    service = WebhookService(hook_config(app("a", receiver.url, SECRET_A, SECRET_B)), retry=FAST_RETRY)
    async with running(service):
        service.emit(answered("a", session_id()))
        (request,) = await receiver.wait_for_count(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(SECRET_A).verify(request.body, request.headers)["type"] == "call.answered"
    assert Webhook(SECRET_B).verify(request.body, request.headers)["type"] == "call.answered"


async def test_500_is_retried_until_acknowledged(receiver: Receiver) -> None:
    answers = iter([500, 502, 204])

    async def flaky(_: Received) -> web.StreamResponse:
        return web.Response(status=next(answers))

    receiver.behaviour = flaky
    service = WebhookService(hook_config(app("a", receiver.url)), retry=FAST_RETRY)
    event = answered("a", session_id())
    async with running(service):
        service.emit(event)
        requests = await receiver.wait_for_count(3)
        await eventually(lambda: _status(service, "a", event.event_id) is DeliveryStatus.DELIVERED)
        record = service.get_delivery("a", event.event_id)
    assert {r.webhook_id for r in requests} == {event.event_id}
    assert len({r.body for r in requests}) == 1  # retries are byte-identical
    assert record is not None
    assert [(a.attempt, a.status_code, a.outcome.value) for a in record.attempts] == [
        (1, 500, "retry"),
        (2, 502, "retry"),
        (3, 204, "delivered"),
    ]
    assert all(a.latency_ms > 0 and a.url == receiver.url for a in record.attempts)


async def test_a_timeout_is_retried(receiver: Receiver) -> None:
    async def first_hangs(request: Received) -> web.StreamResponse:
        if len(receiver.requests) == 1:
            await asyncio.Event().wait()  # until the gateway gives up and disconnects
        return web.Response(status=200)

    receiver.behaviour = first_hangs
    service = WebhookService(hook_config(app("a", receiver.url), request_timeout_s=0.2), retry=FAST_RETRY)
    event = answered("a", session_id())
    async with running(service):
        service.emit(event)
        await receiver.wait_for_count(2)
        await eventually(lambda: _status(service, "a", event.event_id) is DeliveryStatus.DELIVERED)
        record = service.get_delivery("a", event.event_id)
    assert record is not None
    first, second = record.attempts
    assert (first.status_code, first.error) == (None, "timeout after 0.2 s")
    assert 150 < first.latency_ms < 2000
    assert (second.status_code, second.outcome.value) == (200, "delivered")


async def test_429_retry_after_is_honoured(receiver: Receiver) -> None:
    answers = iter([web.Response(status=429, headers={"Retry-After": "1"}), web.Response(status=204)])

    async def limited(_: Received) -> web.StreamResponse:
        return next(answers)

    receiver.behaviour = limited
    service = WebhookService(hook_config(app("a", receiver.url)), retry=FAST_RETRY)
    async with running(service):
        service.emit(answered("a", session_id()))
        first, second = await receiver.wait_for_count(2, within=5)
    # Backoff alone would retry within 50 ms; the receiver asked for a second.
    assert second.at - first.at >= 0.95


async def test_400_fails_at_once_is_listed_and_can_be_redelivered(receiver: Receiver) -> None:
    receiver.behaviour = respond(400)
    service = WebhookService(hook_config(app("a", receiver.url)), retry=FAST_RETRY)
    event = answered("a", session_id())
    async with running(service):
        service.emit(event)
        await eventually(lambda: _status(service, "a", event.event_id) is DeliveryStatus.FAILED)
        failed = service.list_deliveries("a", DeliveryStatus.FAILED, 10)
        assert [r.event_id for r in failed] == [event.event_id]
        assert failed[0].attempt_count == 1
        assert failed[0].last_status_code == 400
        assert "400" in failed[0].last_error
        assert len(receiver.requests) == 1
        assert service.metrics()["webhook_deliveries_failed_total"] == 1

        receiver.behaviour = accept
        redelivered = service.redeliver("a", event.event_id)
        assert redelivered is not None
        assert redelivered.status is DeliveryStatus.PENDING
        requests = await receiver.wait_for_count(2)
        await eventually(lambda: _status(service, "a", event.event_id) is DeliveryStatus.DELIVERED)
        assert service.list_deliveries("a", DeliveryStatus.FAILED, 10) == []
        record = service.get_delivery("a", event.event_id)
    assert requests[0].webhook_id == requests[1].webhook_id == event.event_id
    assert requests[0].body == requests[1].body
    assert record is not None
    assert [a.status_code for a in record.attempts] == [400, 204]


async def test_redeliver_is_refused_while_pending_and_unknown_ids_are_none(receiver: Receiver) -> None:
    gate = asyncio.Event()

    async def held(_: Received) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=204)

    receiver.behaviour = held
    service = WebhookService(hook_config(app("a", receiver.url), app("b", receiver.url)), retry=FAST_RETRY)
    event = answered("a", session_id())
    async with running(service):
        service.emit(event)
        await receiver.wait_for_count(1)
        with pytest.raises(RedeliverRefused, match="pending"):
            service.redeliver("a", event.event_id)
        assert service.redeliver("a", "no-such-event") is None
        assert service.redeliver("b", event.event_id) is None  # another app's delivery
        gate.set()


async def test_receiver_down_then_up_gets_everything_in_order() -> None:
    receiver = Receiver()
    await receiver.start()
    await receiver.stop()  # the port is known and closed: connections are refused
    service = WebhookService(hook_config(app("a", receiver.url), max_attempts=1000), retry=FAST_RETRY)
    events = _call("a")
    async with running(service):
        for event in events:
            service.emit(event)
        await eventually(lambda: service.metrics()["webhook_attempts_failed_total"] >= 3)
        first = service.get_delivery("a", events[0].event_id)
        assert first is not None
        assert first.status is DeliveryStatus.PENDING
        assert "Connect" in first.last_error
        # The rest of the session waits behind the first; nothing else was tried.
        later = [service.get_delivery("a", e.event_id) for e in events[1:]]
        assert [r.attempt_count for r in later if r is not None] == [0, 0, 0]
        await receiver.start()
        try:
            await receiver.wait_for_count(4)
            assert receiver.ids() == [e.event_id for e in events]
        finally:
            await receiver.stop()


async def test_events_of_a_session_stay_in_order_under_retries(receiver: Receiver) -> None:
    in_flight: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []
    failed_once: set[str] = set()
    acknowledged: list[tuple[str, str]] = []

    async def flaky(request: Received) -> web.StreamResponse:
        session = request.payload["session_id"]
        in_flight[session] += 1
        if in_flight[session] > 1:
            overlaps.append(session)
        try:
            await asyncio.sleep(0.001)  # a receiver's own latency, so attempts overlap
            # Every other event fails its first attempt.
            if hash(request.webhook_id) % 2 and request.webhook_id not in failed_once:
                failed_once.add(request.webhook_id)
                return web.Response(status=503)
            acknowledged.append((session, request.webhook_id))
            return web.Response(status=204)
        finally:
            in_flight[session] -= 1

    receiver.behaviour = flaky
    service = WebhookService(hook_config(app("a", receiver.url), concurrency=4), retry=FAST_RETRY)
    calls = [_call("a") for _ in range(8)]
    events = [event for call in calls for event in call]
    async with running(service):
        # Interleave sessions as a busy gateway would.
        for i in range(4):
            for call in calls:
                service.emit(call[i])
        await eventually(lambda: len(acknowledged) == len(events), within=10, what="all acknowledged")
    assert overlaps == []
    assert failed_once  # some retries happened
    for call in calls:
        session = call[0].session_id
        assert [eid for s, eid in acknowledged if s == session] == [e.event_id for e in call]
        # Never a later event of the session before an earlier one was acknowledged.
        sent = [r.webhook_id for r in receiver.requests if r.payload["session_id"] == session]
        order = [next(i for i, e in enumerate(call) if e.event_id == eid) for eid in sent]
        assert order == sorted(order)


async def test_a_slow_receiver_for_one_app_does_not_delay_another() -> None:
    slow, fast = Receiver(), Receiver()
    await slow.start()
    await fast.start()
    gate = asyncio.Event()

    async def stuck(_: Received) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=204)

    slow.behaviour = stuck
    config = hook_config(app("slow", slow.url), app("fast", fast.url), concurrency=3, request_timeout_s=30)
    service = WebhookService(config, retry=FAST_RETRY)
    try:
        async with running(service, grace=0.1):
            for _ in range(20):
                service.emit(answered("slow", session_id()))
            await slow.wait_for_count(3)
            started = time.monotonic()
            fast_events = [answered("fast", session_id()) for _ in range(20)]
            for event in fast_events:
                service.emit(event)
            await fast.wait_for_count(20, within=3)
            assert time.monotonic() - started < 2
            assert sorted(fast.ids()) == sorted(e.event_id for e in fast_events)
            # The slow one gets exactly its concurrency, no more.
            assert slow.in_flight == slow.max_in_flight == 3
            assert len(slow.requests) == 3
            gate.set()
            await slow.wait_for_count(20, within=5)
            assert slow.max_in_flight == 3
    finally:
        gate.set()
        await slow.stop()
        await fast.stop()


async def test_a_dead_receiver_for_one_app_does_not_delay_another(receiver: Receiver) -> None:
    dead = "http://127.0.0.1:9/hooks"  # discard port: nothing listens
    config = hook_config(app("dead", dead), app("live", receiver.url), max_attempts=1000)
    service = WebhookService(config, retry=RetryPolicy(backoff_base_s=0.001, backoff_max_s=0.002))
    async with running(service):
        for _ in range(50):
            service.emit(answered("dead", session_id()))
        live = [answered("live", session_id()) for _ in range(20)]
        for event in live:
            service.emit(event)
        await receiver.wait_for_count(20, within=3)
        assert service.metrics()["webhook_attempts_failed_total"] > 0


async def test_gives_up_after_max_attempts_then_the_session_moves_on(receiver: Receiver) -> None:
    s = session_id()
    first, second = answered("a", s), hangup("a", s)

    async def refuse_first(request: Received) -> web.StreamResponse:
        return web.Response(status=500 if request.webhook_id == first.event_id else 204)

    receiver.behaviour = refuse_first
    service = WebhookService(hook_config(app("a", receiver.url), max_attempts=3), retry=FAST_RETRY)
    async with running(service):
        service.emit(first)
        service.emit(second)
        await receiver.wait_for_count(4)
        await eventually(lambda: _status(service, "a", second.event_id) is DeliveryStatus.DELIVERED)
        record = service.get_delivery("a", first.event_id)
    assert receiver.ids() == [first.event_id] * 3 + [second.event_id]
    assert record is not None
    assert record.status is DeliveryStatus.FAILED
    assert record.attempt_count == 3
    assert "gave up after 3 attempts" in record.last_error


async def test_gives_up_when_too_old(receiver: Receiver) -> None:
    receiver.behaviour = respond(503)
    config = hook_config(app("a", receiver.url), max_attempts=10_000, max_age_s=0.3)
    service = WebhookService(config, retry=FAST_RETRY)
    event = answered("a", session_id())
    async with running(service):
        service.emit(event)
        await eventually(lambda: _status(service, "a", event.event_id) is DeliveryStatus.FAILED)
        record = service.get_delivery("a", event.event_id)
    assert record is not None
    assert "max_age_s" in record.last_error
    assert 1 < record.attempt_count < 10_000


async def test_events_of_apps_without_a_webhook_url_are_counted_not_stored(receiver: Receiver) -> None:
    no_url = Application("quiet", hash_api_key("quiet-key-123"))
    service = WebhookService(hook_config(no_url, app("a", receiver.url)), retry=FAST_RETRY)
    async with running(service):
        service.emit(answered("quiet", session_id()))
        service.emit(answered("unknown-app", session_id()))
        service.emit(answered("a", session_id()))
        await eventually(lambda: service.metrics()["webhook_deliveries_succeeded_total"] == 1)
        metrics = service.metrics()
        for status in DeliveryStatus:
            assert service.list_deliveries("quiet", status, 10) == []
    assert metrics["webhook_events_skipped_no_url_total"] == 2
    assert metrics["webhook_events_stored_total"] == 1
    assert metrics["webhook_queue_depth"] == 0


async def test_events_emitted_before_run_are_delivered_once_running(receiver: Receiver) -> None:
    service = WebhookService(hook_config(app("a", receiver.url)), retry=FAST_RETRY)
    events = _call("a")
    for event in events:
        service.emit(event)
    assert service.metrics()["webhook_queue_depth"] == 4
    async with running(service):
        await receiver.wait_for_count(4)
        assert receiver.ids() == [e.event_id for e in events]


async def test_shutdown_leaves_in_flight_pending_for_the_next_start(
    tmp_path: Path, receiver: Receiver
) -> None:
    outbox = str(tmp_path / "outbox.db")
    gate = asyncio.Event()

    async def held(_: Received) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=204)

    receiver.behaviour = held
    config = hook_config(app("a", receiver.url), outbox_path=outbox)
    event = answered("a", session_id())
    first = WebhookService(config, retry=FAST_RETRY)
    task = asyncio.create_task(first.run())
    first.emit(event)
    await receiver.wait_for_count(1)
    started = time.monotonic()
    await first.shutdown(grace=0.2)
    await task
    assert time.monotonic() - started < 2
    assert _status(first, "a", event.event_id) is DeliveryStatus.PENDING
    first.close()

    receiver.behaviour = accept
    second = WebhookService(config, retry=FAST_RETRY)
    assert second.metrics()["webhook_queue_depth"] == 1
    async with running(second):
        await receiver.wait_for_count(2)
        await eventually(lambda: _status(second, "a", event.event_id) is DeliveryStatus.DELIVERED)
    assert receiver.ids() == [event.event_id, event.event_id]
    gate.set()


async def test_shutdown_is_idempotent_and_run_after_it_returns_at_once(receiver: Receiver) -> None:
    service = WebhookService(hook_config(app("a", receiver.url)), retry=FAST_RETRY)
    task = asyncio.create_task(service.run())
    await asyncio.sleep(0)
    await service.shutdown()
    await service.shutdown()
    await task
    await asyncio.wait_for(service.run(), 1)
    never_ran = WebhookService(hook_config(app("a", receiver.url)), retry=FAST_RETRY)
    await never_ran.shutdown()
    await asyncio.wait_for(never_ran.run(), 1)
    service.close()
    never_ran.close()


async def test_late_events_after_shutdown_are_stored_for_the_next_start(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = hook_config(app("a", receiver.url), outbox_path=str(tmp_path / "o.db"))
    first = WebhookService(config, retry=FAST_RETRY)
    task = asyncio.create_task(first.run())
    await first.shutdown()
    await task
    late = hangup("a", session_id(), cause="SYSTEM_SHUTDOWN")
    first.emit(late)
    first.close()
    second = WebhookService(config, retry=FAST_RETRY)
    async with running(second):
        await receiver.wait_for_count(1)
    assert receiver.ids() == [late.event_id]


async def test_pending_events_of_an_app_that_lost_its_url_fail_visibly(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    before = WebhookService(hook_config(app("a", "http://127.0.0.1:9/hooks"), outbox_path=path))
    event = answered("a", session_id())
    before.emit(event)
    before.close()
    without_url = Application("a", hash_api_key("key-of-a"))
    after = WebhookService(hook_config(without_url, outbox_path=path))
    record = after.get_delivery("a", event.event_id)
    assert record is not None
    assert record.status is DeliveryStatus.FAILED
    assert record.last_error == "application has no webhook_url"
    assert after.metrics()["webhook_queue_depth"] == 0
    with pytest.raises(RedeliverRefused, match="webhook_url"):
        after.redeliver("a", event.event_id)
    after.close()


async def test_finished_deliveries_are_pruned_after_retention(receiver: Receiver) -> None:
    offset = [0.0]
    retry = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, delivered_retention_s=3600.0)
    service = WebhookService(
        hook_config(app("a", receiver.url)), retry=retry, clock=lambda: time.time() + offset[0]
    )
    event = answered("a", session_id())
    async with running(service):
        service.emit(event)
        await eventually(lambda: _status(service, "a", event.event_id) is DeliveryStatus.DELIVERED)
        assert await service.prune() == 0
        offset[0] = 3601.0
        assert await service.prune() == 1
        assert service.get_delivery("a", event.event_id) is None


async def test_metrics_count_attempts_outcomes_and_latency(receiver: Receiver) -> None:
    answers = iter([500, 204, 400])

    async def scripted(_: Received) -> web.StreamResponse:
        return web.Response(status=next(answers))

    receiver.behaviour = scripted
    service = WebhookService(hook_config(app("a", receiver.url)), retry=FAST_RETRY)
    s = session_id()
    async with running(service):
        service.emit(answered("a", s))
        service.emit(hangup("a", s))
        # An attempt leaves the queue inside its task and stops being in flight in
        # the task's done callback, a loop turn later: wait for both.
        await eventually(
            lambda: (
                service.metrics()["webhook_queue_depth"] == 0 and service.metrics()["webhook_in_flight"] == 0
            )
        )
        metrics = service.metrics()
    assert metrics["webhook_events_stored_total"] == 2
    assert metrics["webhook_attempts_total"] == 3
    assert metrics["webhook_attempts_failed_total"] == 2
    assert metrics["webhook_deliveries_succeeded_total"] == 1
    assert metrics["webhook_deliveries_failed_total"] == 1
    assert metrics["webhook_in_flight"] == 0
    assert metrics["webhook_attempt_latency_seconds_count"] == 3
    assert metrics['webhook_attempt_latency_seconds_bucket{le="+Inf"}'] == 3
    assert metrics["webhook_attempt_latency_seconds_sum"] > 0
    assert metrics["webhook_emit_seconds_count"] == 2
