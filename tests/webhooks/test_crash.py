"""SIGKILL the process mid-delivery, start again on the same outbox: nothing is lost.

A real subprocess (``crash_worker``) owns the outbox file. The receiver
acknowledges the first deliveries and then stalls, so at the kill some events
are acknowledged and recorded, some are in flight, and most were never tried.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from .conftest import SECRET_A, Received, Receiver, eventually
from .crash_worker import event_ids
from .workers import ACK_BEFORE_STALL, PER_SESSION, SESSIONS, start_worker


async def _start_worker(outbox: Path, url: str, log: Path, *extra: str) -> asyncio.subprocess.Process:
    return await start_worker("crash_worker", log, "--outbox", str(outbox), "--url", url, *extra)


def _acknowledged_in(outbox: Path) -> set[str]:
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT event_id FROM deliveries WHERE status = 'delivered'")}
    finally:
        db.close()


@pytest.mark.slow
async def test_sigkill_mid_delivery_then_restart_delivers_everything(
    tmp_path: Path, receiver: Receiver
) -> None:
    outbox = tmp_path / "outbox.db"
    stall = asyncio.Event()
    answered = 0

    async def slows_down(_: Received) -> web.StreamResponse:
        nonlocal answered
        if answered >= ACK_BEFORE_STALL:
            await stall.wait()  # never set: these requests die with the process
        answered += 1
        return web.Response(status=204)

    receiver.behaviour = slows_down
    first = await _start_worker(outbox, receiver.url, tmp_path / "first.log", "--emit")
    try:
        assert first.stdout is not None
        line = await asyncio.wait_for(first.stdout.readline(), 20)
        assert line.strip() == b"emitted"
        # Acknowledged ones plus a full set of stalled ones in flight.
        await receiver.wait_for_count(ACK_BEFORE_STALL + 4, within=20)
        await eventually(lambda: receiver.in_flight == 4, what="4 stalled requests")
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert first.returncode == -signal.SIGKILL

    acknowledged = _acknowledged_in(outbox)
    seen_before_restart = len(receiver.requests)
    assert 0 < len(acknowledged) <= ACK_BEFORE_STALL

    async def accepts(_: Received) -> web.StreamResponse:
        return web.Response(status=204)

    receiver.behaviour = accepts
    all_ids = {eid for session in event_ids(SESSIONS, PER_SESSION) for eid in session}
    second = await _start_worker(outbox, receiver.url, tmp_path / "second.log")
    try:
        await receiver.wait_for(lambda: all_ids <= set(receiver.ids()), within=30)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 10)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()

    requests = receiver.requests
    after_restart = requests[seen_before_restart:]
    # Nothing lost.
    assert set(receiver.ids()) == all_ids
    # Nothing acknowledged and recorded before the kill was sent again.
    assert not acknowledged & {r.webhook_id for r in after_restart}
    # Duplicates are only the events in flight at the kill, byte-identical with the same webhook-id.
    by_id: dict[str, list[Received]] = defaultdict(list)
    for request in requests:
        by_id[request.webhook_id].append(request)
    duplicated = {eid for eid, copies in by_id.items() if len(copies) > 1}
    in_flight_at_kill = {r.webhook_id for r in requests[:seen_before_restart]} - acknowledged
    assert duplicated <= in_flight_at_kill
    verifier = Webhook(SECRET_A)
    for eid, copies in by_id.items():
        assert len({c.body for c in copies}) == 1
        for copy in copies:
            assert verifier.verify(copy.body, copy.headers)["id"] == eid == copy.webhook_id
    # Per session, first arrivals are in emit order across the crash.
    first_seen = list(dict.fromkeys(receiver.ids()))
    for session in event_ids(SESSIONS, PER_SESSION):
        assert [eid for eid in first_seen if eid in session] == session


def _deliveries_in(outbox: Path) -> list[tuple[str, str, int]]:
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT event_id, status, attempts FROM deliveries ORDER BY seq"))
    finally:
        db.close()


@pytest.mark.slow
async def test_a_hostile_retry_after_is_recorded_and_sigterm_still_exits_cleanly(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Issue 7: this answer used to end delivery, exit 1 on SIGTERM, and come back first on the next start."""
    outbox = tmp_path / "outbox.db"

    async def unavailable_until_the_year_99999999999(_: Received) -> web.StreamResponse:
        return web.Response(status=503, headers={"Retry-After": "Mon, 01 Jan 99999999999 00:00:00 GMT"})

    receiver.behaviour = unavailable_until_the_year_99999999999
    log = tmp_path / "worker.log"
    worker = await _start_worker(outbox, receiver.url, log, "--emit", "--sessions", "1", "--per-session", "1")
    try:
        await receiver.wait_for_count(1, within=20)
        # Given up at once (the receiver asked for a time past max_age_s) and recorded, so a
        # restart does not send it first again.
        await eventually(
            lambda: [row[1:] for row in _deliveries_in(outbox)] == [("failed", 1)],
            within=10,
            what="the attempt recorded as failed",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 10)
    assert worker.returncode == 0, log.read_text()
    assert len(receiver.requests) == 1
