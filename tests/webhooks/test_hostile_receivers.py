"""One tenant's receiver, socket or failure never hurts another's webhooks.

Each test runs a hostile or failing application beside a healthy one and
checks three things: the healthy one's webhooks arrive while the trouble
lasts, the trouble is recorded as an attempt (so the retry budget ends it),
and the service stops cleanly afterwards (``running`` awaits ``run``, which
would re-raise whatever killed delivery).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from aiohttp import web

from callcontrol.webhooks import DeliveryStatus, RetryPolicy, WebhookService
from callcontrol.webhooks.http_client import Answer, Destination, WebhookClient

from .conftest import (
    FAST_RETRY,
    RawAnswer,
    RawReceiver,
    Received,
    Receiver,
    answered,
    app,
    eventually,
    hook_config,
    raw,
    running,
    session_id,
)


def _status(service: WebhookService, app_id: str, event_id: str) -> DeliveryStatus | None:
    record = service.get_delivery(app_id, event_id)
    return None if record is None else record.status


async def _healthy_app_gets_everything(service: WebhookService, receiver: Receiver, count: int = 5) -> None:
    events = [answered("healthy", session_id()) for _ in range(count)]
    for event in events:
        service.emit(event)
    await receiver.wait_for(lambda: {e.event_id for e in events} <= set(receiver.ids()), within=5)


@pytest.fixture
async def healthy() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


# -- Retry-After a receiver can send --------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "outcome"),
    [
        # A date past any max_age_s: honoured, so the delivery is given up at once.
        ("Mon, 01 Jan 99999999999 00:00:00 GMT", DeliveryStatus.FAILED),
        ("9" * 400, DeliveryStatus.FAILED),
        # Not a number anywhere but in str.isdigit(): ignored, the backoff applies.
        ("²", DeliveryStatus.DELIVERED),
        ("Mon, 01 Jan 2030 99:00:00 GMT", DeliveryStatus.DELIVERED),
    ],
)
async def test_an_unreadable_retry_after_is_recorded_and_other_apps_keep_their_webhooks(
    receiver: Receiver, healthy: Receiver, retry_after: str, outcome: DeliveryStatus
) -> None:
    answers = iter([web.Response(status=503, headers={"Retry-After": retry_after})])

    async def once_unavailable(_: Received) -> web.StreamResponse:
        return next(answers, web.Response(status=204))

    receiver.behaviour = once_unavailable
    config = hook_config(app("hostile", receiver.url), app("healthy", healthy.url), max_age_s=3600)
    service = WebhookService(config, retry=FAST_RETRY)
    event = answered("hostile", session_id())
    async with running(service):
        service.emit(event)
        await receiver.wait_for_count(1)
        await _healthy_app_gets_everything(service, healthy)
        await eventually(lambda: _status(service, "hostile", event.event_id) is outcome, what=str(outcome))
        record = service.get_delivery("hostile", event.event_id)
    assert record is not None
    assert record.attempts[0].status_code == 503
    if outcome is DeliveryStatus.FAILED:
        assert "max_age_s" in record.last_error
        assert len(receiver.requests) == 1
    else:
        assert [a.status_code for a in record.attempts] == [503, 204]


async def test_undecodable_retry_after_bytes_are_ignored(healthy: Receiver) -> None:
    hostile = RawReceiver(raw(b"HTTP/1.1 503 No\r\nRetry-After: \xb2\xff\xfe\r\nContent-Length: 0\r\n\r\n"))
    await hostile.start()
    config = hook_config(app("hostile", hostile.url), app("healthy", healthy.url), max_attempts=2)
    service = WebhookService(config, retry=FAST_RETRY)
    event = answered("hostile", session_id())
    try:
        async with running(service):
            service.emit(event)
            await _healthy_app_gets_everything(service, healthy)
            await eventually(lambda: _status(service, "hostile", event.event_id) is DeliveryStatus.FAILED)
            record = service.get_delivery("hostile", event.event_id)
    finally:
        await hostile.stop()
    assert record is not None
    assert [a.status_code for a in record.attempts] == [503, 503]
    assert "gave up after 2 attempts" in record.last_error


# -- two tenants, one URL --------------------------------------------------------


async def test_two_apps_on_one_url_do_not_wait_for_each_other(receiver: Receiver) -> None:
    gate = asyncio.Event()

    async def slow_for_one_tenant(request: Received) -> web.StreamResponse:
        if request.payload["app_id"] == "slow":
            await gate.wait()
        return web.Response(status=204)

    receiver.behaviour = slow_for_one_tenant
    config = hook_config(
        app("slow", receiver.url), app("fast", receiver.url), concurrency=2, request_timeout_s=30
    )
    service = WebhookService(config, retry=FAST_RETRY)
    try:
        async with running(service, grace=0.1):
            for _ in range(6):
                service.emit(answered("slow", session_id()))
            await receiver.wait_for(lambda: receiver.in_flight == 2)
            fast = [answered("fast", session_id()) for _ in range(6)]
            for event in fast:
                service.emit(event)
            # The slow tenant's requests are still held: nothing here waits for a timeout.
            await receiver.wait_for(lambda: {e.event_id for e in fast} <= set(receiver.ids()), within=5)
            slow_requests = [r for r in receiver.requests if r.payload["app_id"] == "slow"]
            assert len(slow_requests) == 2  # each application still has its own limit
            assert not gate.is_set()
            gate.set()
            await receiver.wait_for_count(12)
    finally:
        gate.set()


# -- an attempt that raises --------------------------------------------------------


class _RaisingDestination(Destination):
    async def post(self, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Answer:
        raise RuntimeError("a bug nobody foresaw")


class _ClientThatRaisesFor(WebhookClient):
    """The real client, except that attempts to URLs containing ``marker`` raise."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self._marker = marker

    def destination(self, url: str) -> Destination:
        if self._marker in url:
            return _RaisingDestination(url, None)
        return super().destination(url)


async def test_an_attempt_that_raises_is_logged_recorded_and_given_up_within_budget(
    receiver: Receiver, healthy: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    config = hook_config(
        app("poisoned", f"{receiver.url}?tenant=poisoned"), app("healthy", healthy.url), max_attempts=3
    )
    service = WebhookService(
        config, retry=FAST_RETRY, session_factory=lambda: _ClientThatRaisesFor("poisoned")
    )
    event = answered("poisoned", session_id())
    with caplog.at_level(logging.ERROR, logger="callcontrol.webhooks"):
        async with running(service):
            service.emit(event)
            await eventually(lambda: _status(service, "poisoned", event.event_id) is DeliveryStatus.FAILED)
            await _healthy_app_gets_everything(service, healthy)
            record = service.get_delivery("poisoned", event.event_id)
    assert record is not None
    assert [(a.status_code, a.error) for a in record.attempts] == [(None, "internal error: RuntimeError")] * 3
    assert "gave up after 3 attempts" in record.last_error
    raised = [r for r in caplog.records if r.exc_info and event.event_id in r.getMessage()]
    assert len(raised) == 3
    assert all("poisoned" in r.getMessage() for r in raised)
    assert receiver.requests == []


# -- the outbox failing under a lane ----------------------------------------------


def _sql(path: str, statement: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute(statement)
    finally:
        db.close()


async def test_an_attempt_that_cannot_be_recorded_is_logged_and_sent_again_later(
    tmp_path: Path, receiver: Receiver, healthy: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "outbox.db")
    config = hook_config(app("broken", receiver.url), app("healthy", healthy.url), outbox_path=path)
    service = WebhookService(config, retry=FAST_RETRY)
    _sql(
        path,
        "CREATE TRIGGER refuse_broken BEFORE INSERT ON attempts"
        " WHEN (SELECT app_id FROM deliveries WHERE seq = NEW.delivery_seq) = 'broken'"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
    )
    event = answered("broken", session_id())
    with caplog.at_level(logging.ERROR, logger="callcontrol.webhooks"):
        async with running(service):
            service.emit(event)
            await receiver.wait_for_count(2)  # acknowledged, not recorded, so sent again after a pause
            await _healthy_app_gets_everything(service, healthy)
            assert _status(service, "broken", event.event_id) is DeliveryStatus.PENDING
            _sql(path, "DROP TRIGGER refuse_broken")
            await eventually(lambda: _status(service, "broken", event.event_id) is DeliveryStatus.DELIVERED)
    assert set(receiver.ids()) == {event.event_id}
    refused = [r for r in caplog.records if "could not be recorded" in r.getMessage()]
    assert refused
    assert all(event.event_id in r.getMessage() and "broken" in r.getMessage() for r in refused)


async def test_a_lane_whose_claim_fails_backs_off_and_recovers(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "outbox.db")
    service = WebhookService(hook_config(app("a", receiver.url), outbox_path=path), retry=FAST_RETRY)
    first, second = answered("a", session_id()), answered("a", session_id())
    with caplog.at_level(logging.ERROR, logger="callcontrol.webhooks"):
        async with running(service):
            service.emit(first)
            await receiver.wait_for_count(1)
            # The claim query names this index; without it every claim fails.
            _sql(path, "DROP INDEX deliveries_due")
            service.emit(second)
            await eventually(lambda: any("outbox failed" in r.getMessage() for r in caplog.records))
            _sql(
                path,
                "CREATE INDEX deliveries_due ON deliveries (app_id, next_attempt_at, seq)"
                " WHERE status = 'pending' AND head = 1",
            )
            await receiver.wait_for_count(2)
    assert receiver.ids() == [first.event_id, second.event_id]


async def test_failed_pruning_does_not_stop_delivery(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "outbox.db")
    offset = [0.0]
    retry = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, prune_interval_s=0.01)
    service = WebhookService(
        hook_config(app("a", receiver.url), outbox_path=path),
        retry=retry,
        clock=lambda: time.time() + offset[0],
    )
    _sql(
        path,
        "CREATE TRIGGER keep_all BEFORE DELETE ON deliveries BEGIN SELECT RAISE(ABORT, 'read-only'); END",
    )
    first, second = answered("a", session_id()), answered("a", session_id())
    with caplog.at_level(logging.ERROR, logger="callcontrol.webhooks"):
        async with running(service):
            service.emit(first)
            await eventually(lambda: _status(service, "a", first.event_id) is DeliveryStatus.DELIVERED)
            offset[0] = 2 * 24 * 3600.0  # past the delivered retention: pruning now has work, and fails
            await eventually(lambda: any("pruning" in r.getMessage() for r in caplog.records))
            service.emit(second)
            await receiver.wait_for_count(2)
    assert receiver.ids() == [first.event_id, second.event_id]


# -- answers no HTTP library would send --------------------------------------------


def _deflate_bomb(mib: int) -> bytes:
    """``mib`` MiB of zeros, deflated fast (about 75 KiB for 16 MiB)."""
    packer = zlib.compressobj(1)
    chunk = bytes(1024 * 1024)
    return b"".join(packer.compress(chunk) for _ in range(mib)) + packer.flush()


# Built once at import, not in the receiver: that runs on the gateway's loop.
# aiohttp 3.14 inflates in bounded chunks anyway; the gateway does not inflate at all.
_BOMB = _deflate_bomb(16)


async def _compression_bomb(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(_BOMB))
    writer.write(_BOMB)
    await writer.drain()


async def _trickle_headers(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    while True:
        writer.write(b"X")
        await writer.drain()
        await asyncio.sleep(0.02)


async def _trickle_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while True:
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.02)


async def _never_answer(_: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("answer", "status_code"),
    [
        pytest.param(
            raw(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n"), None, id="header-too-long"
        ),
        pytest.param(
            raw(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(1000)) + b"\r\n"),
            None,
            id="too-many-headers",
        ),
        pytest.param(raw(b"HTTP/1.1 2000 \xff\xfe\x1b[31mOK\r\n\r\n"), None, id="bad-status-line"),
        pytest.param(raw(b"\x00\x01\x02 not http at all\r\n\r\n"), None, id="garbage"),
        pytest.param(raw(b"HTTP/1.1 20"), None, id="cut-short"),
        pytest.param(
            raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), None, id="bad-chunk"
        ),
        pytest.param(raw(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), None, id="negative-length"),
        pytest.param(raw(b"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n"), 999, id="status-999"),
        pytest.param(
            raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nhi"),
            101,
            id="upgrade",
        ),
        pytest.param(
            raw(b"HTTP/1.1 302 Found\r\nLocation: http://\xff\xfe/\r\nContent-Length: 0\r\n\r\n"),
            302,
            id="redirect",
        ),
        pytest.param(_compression_bomb, 200, id="compression-bomb"),
        pytest.param(
            raw(b"HTTP/1.1 200 OK\r\nContent-Length: 8000000\r\n\r\n" + b"x" * 8_000_000), 200, id="huge-body"
        ),
        pytest.param(_trickle_body, 200, id="trickled-body"),
        pytest.param(_trickle_headers, None, id="trickled-headers"),
        pytest.param(_never_answer, None, id="never-answers"),
    ],
)
async def test_a_hostile_answer_is_one_recorded_attempt_and_hurts_no_one_else(
    healthy: Receiver, answer: RawAnswer, status_code: int | None
) -> None:
    hostile = RawReceiver(answer)
    await hostile.start()
    config = hook_config(
        app("hostile", hostile.url), app("healthy", healthy.url), max_attempts=1, request_timeout_s=1.0
    )
    service = WebhookService(config, retry=FAST_RETRY)
    event = answered("hostile", session_id())
    try:
        async with running(service, grace=0.1):
            service.emit(event)
            await _healthy_app_gets_everything(service, healthy)
            await eventually(
                lambda: _status(service, "hostile", event.event_id) is not DeliveryStatus.PENDING
            )
            record = service.get_delivery("hostile", event.event_id)
    finally:
        await hostile.stop()
    assert record is not None
    (attempt,) = record.attempts
    assert attempt.status_code == status_code
    expected = DeliveryStatus.DELIVERED if status_code == 200 else DeliveryStatus.FAILED
    assert record.status is expected
    if status_code is None:
        assert attempt.error
    # The receiver's bytes never reach a log line or the API as they came.
    for text in (attempt.error, record.last_error):
        assert all(" " <= c <= "~" for c in text), text
        assert len(text) <= 400


# -- cookies ----------------------------------------------------------------------


async def test_a_receivers_cookies_never_reach_another_application(receiver: Receiver) -> None:
    async def sets_a_cookie(request: Received) -> web.StreamResponse:
        response = web.Response(status=204)
        if request.payload["app_id"] == "first":
            response.set_cookie("tenant", "first-secret")
        return response

    receiver.behaviour = sets_a_cookie
    # A host name, not an IP: aiohttp's default jar keeps cookies only for names.
    url = receiver.url.replace("127.0.0.1", "localhost")
    service = WebhookService(hook_config(app("first", url), app("second", url)), retry=FAST_RETRY)
    async with running(service):
        service.emit(answered("first", session_id()))
        await receiver.wait_for_count(1)
        service.emit(answered("second", session_id()))
        await receiver.wait_for_count(2)
    assert [r.payload["app_id"] for r in receiver.requests] == ["first", "second"]
    assert "cookie" not in receiver.requests[1].headers


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://no-such-host.invalid/hooks", id="unresolvable"),
        pytest.param("http://127.0.0.1:9/hooks", id="refused"),
        pytest.param("http://:80/hooks", id="no-host"),
        pytest.param("http://127.0.0.1:99999/hooks", id="port-out-of-range"),
    ],
)
async def test_a_receiver_that_cannot_be_reached_is_a_recorded_attempt(healthy: Receiver, url: str) -> None:
    config = hook_config(
        app("unreachable", url), app("healthy", healthy.url), max_attempts=2, request_timeout_s=1
    )
    service = WebhookService(config, retry=FAST_RETRY)
    event = answered("unreachable", session_id())
    async with running(service):
        service.emit(event)
        await _healthy_app_gets_everything(service, healthy)
        await eventually(lambda: _status(service, "unreachable", event.event_id) is DeliveryStatus.FAILED)
        record = service.get_delivery("unreachable", event.event_id)
    assert record is not None
    assert [a.status_code for a in record.attempts] == [None, None]
    assert all(a.error and all(" " <= c <= "~" for c in a.error) for a in record.attempts)
