"""The outboxes: per-session heads, budgets, retention and queries, on SQLite and on Redis.

Behaviour tests take ``outbox`` and run against both stores; what only one
store has (SQLite's file, WAL and query plans) takes ``sqlite_outbox``.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callcontrol.webhooks import DeliveryStatus, OutboxError, Outcome
from callcontrol.webhooks.outbox import AttemptRecord, NewDelivery, Outbox, SqliteOutbox
from callcontrol.webhooks.redis_outbox import RedisOutbox
from tests.redis_server import RedisServer


def _new(event_id: str, session: str = "s1", app_id: str = "a", at: float = 100.0) -> NewDelivery:
    return NewDelivery(event_id, "call.answered", app_id, session, b'{"id":"%s"}' % event_id.encode(), at)


def _attempt(outcome: Outcome, number: int = 1, status: int | None = 200, at: float = 100.0) -> AttemptRecord:
    return AttemptRecord(number, at, "http://r/hooks", status, "", 1.5, outcome)


def _due_ids(outbox: Outbox, now: float = 1000.0, app_id: str = "a") -> list[str]:
    return [d.event_id for d in outbox.due(app_id, now, 100)]


@pytest.fixture
def sqlite_outbox(tmp_path: Path) -> Iterator[SqliteOutbox]:
    box = SqliteOutbox(str(tmp_path / "outbox.db"))
    yield box
    box.close()


TOKEN = "test-replica/0"


def held_redis_outbox(server: RedisServer, *apps: str) -> RedisOutbox:
    """A Redis outbox whose replica holds the delivery leases of ``apps``."""
    box = RedisOutbox(server.url, lease_token=lambda app_id: TOKEN if app_id in apps else None)
    for app_id in apps:
        box._redis.set(f"{box.prefix}lease:{app_id}", TOKEN)
    return box


@pytest.fixture(params=["sqlite", "redis"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    box: Outbox
    if request.param == "sqlite":
        box = SqliteOutbox(str(tmp_path / "outbox.db"))
    else:
        box = held_redis_outbox(request.getfixturevalue("redis_server"), "a", "b")
    yield box
    box.close()


def test_an_added_event_is_committed_when_add_returns(tmp_path: Path, sqlite_outbox: SqliteOutbox) -> None:
    assert sqlite_outbox.add(_new("e1"))
    other = sqlite3.connect(tmp_path / "outbox.db")
    try:
        assert other.execute("SELECT event_id, status FROM deliveries").fetchall() == [("e1", "pending")]
    finally:
        other.close()


def test_uses_wal_with_normal_sync_by_default(sqlite_outbox: SqliteOutbox, tmp_path: Path) -> None:
    db = sqlite_outbox._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    full = SqliteOutbox(str(tmp_path / "full.db"), durable_sync=True)
    try:
        assert full._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        full.close()


def test_the_same_event_id_is_stored_once(outbox: Outbox) -> None:
    assert outbox.add(_new("e1"))
    assert not outbox.add(_new("e1"))
    assert outbox.pending_count() == 1


def test_only_the_oldest_pending_event_of_a_session_is_due(outbox: Outbox) -> None:
    for event_id, session in [("a1", "s1"), ("b1", "s2"), ("a2", "s1"), ("a3", "s1"), ("b2", "s2")]:
        outbox.add(_new(event_id, session))
    assert _due_ids(outbox) == ["a1", "b1"]
    first = outbox.due("a", 1000.0, 100)[0]
    outbox.record_attempt(first.seq, _attempt(Outcome.DELIVERED), last_error="")
    assert _due_ids(outbox) == ["b1", "a2"]


def test_a_failed_head_lets_the_next_event_go(outbox: Outbox) -> None:
    outbox.add(_new("e1"))
    outbox.add(_new("e2"))
    head = outbox.due("a", 1000.0, 1)[0]
    outbox.record_attempt(head.seq, _attempt(Outcome.FAILED, status=400), last_error="HTTP 400")
    assert _due_ids(outbox) == ["e2"]
    record = outbox.get("a", "e1")
    assert record is not None
    assert record.status is DeliveryStatus.FAILED
    assert record.last_status_code == 400
    assert record.last_error == "HTTP 400"


def test_a_retry_keeps_the_session_waiting_until_it_is_due(outbox: Outbox) -> None:
    outbox.add(_new("e1"))
    outbox.add(_new("e2"))
    head = outbox.due("a", 1000.0, 1)[0]
    outbox.record_attempt(
        head.seq, _attempt(Outcome.RETRY, status=503), next_attempt_at=2000.0, last_error="x"
    )
    assert _due_ids(outbox, now=1999.0) == []
    assert outbox.next_due("a") == 2000.0
    again = outbox.due("a", 2000.0, 1)[0]
    assert (again.event_id, again.round_attempts, again.attempts) == ("e1", 1, 1)


def test_claimed_deliveries_can_be_excluded(outbox: Outbox) -> None:
    outbox.add(_new("e1", "s1"))
    outbox.add(_new("e2", "s2"))
    first = outbox.due("a", 1000.0, 1)[0]
    assert [d.event_id for d in outbox.due("a", 1000.0, 10, exclude=[first.seq])] == ["e2"]
    assert outbox.next_due("a", exclude=[first.seq]) == 100.0
    assert outbox.next_due("b") is None


async def test_a_claim_takes_the_due_heads_and_says_when_the_next_one_is_due(outbox: Outbox) -> None:
    outbox.add(_new("e1", "s1"))
    outbox.add(_new("e2", "s1"))  # behind e1: not a head
    outbox.add(_new("e3", "s2", at=300.0))
    outbox.add(_new("e4", "s3", at=5000.0))
    full = await outbox.claim("a", 1000.0, 1, ())
    assert ([d.event_id for d in full.due], full.next_at) == (["e1"], None)  # no free slot left
    (first,) = full.due
    rest = await outbox.claim("a", 1000.0, 10, [first.seq])
    assert ([d.event_id for d in rest.due], rest.next_at) == (["e3"], 5000.0)
    assert rest.due == outbox.due("a", 1000.0, 10, [first.seq])
    early = await outbox.claim("a", 50.0, 10, ())
    assert (early.due, early.next_at) == ([], 100.0)
    assert (await outbox.claim("b", 1000.0, 10, ())).next_at is None


async def test_a_claim_answers_exactly_what_due_then_next_due_did(outbox: Outbox) -> None:
    """On heads due before, at and after ``now``, retries with sessions waiting behind them,
    two applications, and exclusions."""
    rng = random.Random(7)
    for i in range(60):
        at = float(rng.randrange(90, 110))
        outbox.add(_new(f"e{i}", session=f"s{rng.randrange(12)}", app_id=rng.choice("ab"), at=at))
    for app_id in "ab":
        for head in outbox.due(app_id, 1000.0, 100)[::2]:
            if rng.random() < 0.3:
                outbox.record_attempt(head.seq, _attempt(Outcome.DELIVERED), last_error="")
            else:  # due again before, at or after now (100.0), some at the same time
                at = float(rng.choice([95, 100, 100, 104, 150, 150, 300]))
                outbox.record_attempt(head.seq, _attempt(Outcome.RETRY), next_attempt_at=at, last_error="x")
    if isinstance(outbox, RedisOutbox):
        await outbox.flush()  # the records are stored: due no longer leaves them out
    answered = 0
    for app_id in "abz":
        heads = [d.seq for d in outbox.due(app_id, 10_000.0, 100)]
        for now in (0.0, 99.0, 100.0, 104.0, 149.9, 150.0, 10_000.0):
            for limit in (1, 2, 3, 5, 100):
                for exclude in ((), heads[:1], heads[1:4], heads[::2], heads, [10_001]):
                    due = outbox.due(app_id, now, limit, exclude)
                    rest = [*exclude, *(d.seq for d in due)]
                    next_at = None if len(due) == limit else outbox.next_due(app_id, rest)
                    claim = await outbox.claim(app_id, now, limit, exclude)
                    assert (list(claim.due), claim.next_at) == (due, next_at), (app_id, now, limit, exclude)
                    answered += bool(due) + (next_at is not None)
    assert answered > 200  # both halves of the answer are exercised, not just empty ones


def test_applications_do_not_see_each_others_rows(outbox: Outbox) -> None:
    outbox.add(_new("e1", app_id="a"))
    outbox.add(_new("e2", "s1", app_id="b"))  # same session id, other app: its own head
    assert _due_ids(outbox, app_id="a") == ["e1"]
    assert _due_ids(outbox, app_id="b") == ["e2"]
    assert outbox.get("b", "e1") is None


def test_every_attempt_is_kept_with_its_details(outbox: Outbox) -> None:
    outbox.add(_new("e1"))
    seq = outbox.due("a", 1000.0, 1)[0].seq
    outbox.record_attempt(
        seq,
        AttemptRecord(1, 200.0, "http://r", None, "timeout after 1 s", 1000.0, Outcome.RETRY),
        next_attempt_at=300.0,
        last_error="timeout after 1 s",
    )
    outbox.record_attempt(
        seq, AttemptRecord(2, 300.0, "http://r", 204, "", 2.5, Outcome.DELIVERED), last_error=""
    )
    record = outbox.get("a", "e1")
    assert record is not None
    assert record.status is DeliveryStatus.DELIVERED
    assert record.attempt_count == 2
    assert record.finished_at == pytest.approx(300.0025)
    assert [(a.attempt, a.status_code, a.error, a.outcome) for a in record.attempts] == [
        (1, None, "timeout after 1 s", Outcome.RETRY),
        (2, 204, "", Outcome.DELIVERED),
    ]
    assert record.body == b'{"id":"e1"}'


def test_requeue_gives_a_finished_delivery_a_fresh_budget(outbox: Outbox) -> None:
    outbox.add(_new("e1"))
    seq = outbox.due("a", 1000.0, 1)[0].seq
    outbox.record_attempt(seq, _attempt(Outcome.FAILED, status=400), last_error="HTTP 400")
    record = outbox.requeue("a", "e1", now=5000.0)
    assert record is not None
    assert record.status is DeliveryStatus.PENDING
    assert record.next_attempt_at == 5000.0
    due = outbox.due("a", 5000.0, 1)[0]
    assert (due.round_attempts, due.round_started_at, due.attempts) == (0, 5000.0, 1)
    with pytest.raises(ValueError, match="pending"):
        outbox.requeue("a", "e1", now=5001.0)
    assert outbox.requeue("a", "nope", now=5001.0) is None
    assert outbox.requeue("b", "e1", now=5001.0) is None


def test_a_requeued_event_goes_before_later_events_of_its_session(outbox: Outbox) -> None:
    outbox.add(_new("e1"))
    outbox.add(_new("e2"))
    outbox.add(_new("e3"))
    e1 = outbox.due("a", 1000.0, 1)[0]
    outbox.record_attempt(e1.seq, _attempt(Outcome.FAILED, status=400), last_error="")
    e2 = outbox.due("a", 1000.0, 1)[0]
    assert e2.event_id == "e2"
    outbox.requeue("a", "e1", now=1000.0)
    assert _due_ids(outbox) == ["e2"]  # e2 is in flight: still the only head
    outbox.record_attempt(e2.seq, _attempt(Outcome.DELIVERED), last_error="")
    assert _due_ids(outbox) == ["e1"]


def test_prune_removes_old_finished_rows_and_their_attempts_only(outbox: Outbox) -> None:
    for i in range(5):
        outbox.add(_new(f"d{i}", session=f"s{i}"))
    outbox.add(_new("p0", session="p"))
    for due in outbox.due("a", 1000.0, 100):
        if due.event_id.startswith("d"):
            outbox.record_attempt(due.seq, _attempt(Outcome.DELIVERED, at=100.0), last_error="")
    assert outbox.prune(DeliveryStatus.FAILED, finished_before=1e9, limit=10) == 0
    assert outbox.prune(DeliveryStatus.DELIVERED, finished_before=50.0, limit=10) == 0
    assert outbox.prune(DeliveryStatus.DELIVERED, finished_before=1e9, limit=3) == 3
    assert outbox.prune(DeliveryStatus.DELIVERED, finished_before=1e9, limit=3) == 2
    assert all(outbox.get("a", f"d{i}") is None for i in range(5))
    if isinstance(outbox, SqliteOutbox):
        assert outbox._db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
    else:  # nothing of a pruned delivery stays behind
        assert isinstance(outbox, RedisOutbox)
        assert outbox._redis.keys(f"{outbox.prefix}att:*") == []
        assert outbox._redis.hlen(f"{outbox.prefix}ids") == 1
    assert outbox.pending_count() == 1
    with pytest.raises(ValueError, match="never"):
        outbox.prune(DeliveryStatus.PENDING, 1e9, 10)


def test_listing_is_newest_first_and_pages_by_seq(outbox: Outbox) -> None:
    for i in range(5):
        outbox.add(_new(f"e{i}", session=f"s{i}"))
    first = outbox.list_deliveries("a", DeliveryStatus.PENDING, 2)
    assert [r.event_id for r in first] == ["e4", "e3"]
    second = outbox.list_deliveries("a", DeliveryStatus.PENDING, 10, before_seq=first[-1].seq)
    assert [r.event_id for r in second] == ["e2", "e1", "e0"]
    assert outbox.list_deliveries("a", DeliveryStatus.FAILED, 10) == []


def test_fail_pending_ends_an_applications_queue(outbox: Outbox) -> None:
    outbox.add(_new("e1"))
    outbox.add(_new("e2"))
    outbox.add(_new("x1", app_id="b"))
    assert outbox.fail_pending("a", "application has no webhook_url", 10.0) == 2
    assert outbox.pending_apps() == {"b"}
    record = outbox.get("a", "e2")
    assert record is not None
    assert (record.status, record.last_error) == (DeliveryStatus.FAILED, "application has no webhook_url")


def test_rows_survive_reopening_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    box = SqliteOutbox(path)
    box.add(_new("e1"))
    box.add(_new("e2"))
    box.close()
    again = SqliteOutbox(path)
    try:
        assert _due_ids(again) == ["e1"]
        assert again.pending_count() == 2
    finally:
        again.close()


def test_a_second_owner_of_the_same_file_is_refused(sqlite_outbox: SqliteOutbox) -> None:
    with pytest.raises(OutboxError, match="already in use"):
        SqliteOutbox(sqlite_outbox.path)


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        SqliteOutbox(str(path))
    SqliteOutbox(str(tmp_path / "fine.db")).close()  # and the lock was released on failure
    with pytest.raises(OutboxError, match="schema version 99"):
        SqliteOutbox(str(path))


# The deliveries table as schema version 1 wrote it (gateways before issue 9's second pass).
_V1_DELIVERIES = """
CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL,
    app_id TEXT NOT NULL, session_id TEXT NOT NULL, body BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')), head INTEGER NOT NULL,
    created_at REAL NOT NULL, next_attempt_at REAL NOT NULL, round_started_at REAL NOT NULL,
    round_attempts INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER, last_error TEXT NOT NULL DEFAULT '', finished_at REAL
);
CREATE TABLE attempts (
    delivery_seq INTEGER NOT NULL REFERENCES deliveries (seq) ON DELETE CASCADE,
    attempt INTEGER NOT NULL, started_at REAL NOT NULL, url TEXT NOT NULL, status_code INTEGER,
    error TEXT NOT NULL, latency_ms REAL NOT NULL, outcome TEXT NOT NULL,
    PRIMARY KEY (delivery_seq, attempt)
) WITHOUT ROWID;
INSERT INTO deliveries VALUES
    (7, 'done', 'call.answered', 'a', 's1', x'7b7d', 'delivered', 0, 1, 1, 1, 1, 1, 200, '', 2),
    (9, 'next', 'call.hangup', 'a', 's1', x'7b7d', 'pending', 1, 1, 1, 1, 0, 0, NULL, '', NULL);
INSERT INTO attempts VALUES (7, 1, 1.5, 'http://r/hooks', 200, '', 1.5, 'delivered');
PRAGMA user_version = 1;
"""


def test_a_version_1_outbox_is_migrated_with_its_rows_attempts_and_order(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(_V1_DELIVERIES)
    db.close()
    box = SqliteOutbox(str(path))
    try:
        assert box._db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert (
            "AUTOINCREMENT"
            not in box._db.execute("SELECT sql FROM sqlite_master WHERE name = 'deliveries'").fetchone()[0]
        )
        assert box._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        done = box.get("a", "done")
        assert done is not None
        assert (done.seq, done.status, [a.status_code for a in done.attempts]) == (
            7,
            DeliveryStatus.DELIVERED,
            [200],
        )
        assert _due_ids(box) == ["next"]
        box.add(_new("later", session="s1"))
        assert box.get("a", "later").seq == 10  # type: ignore[union-attr]
        box.record_attempt(9, _attempt(Outcome.DELIVERED), last_error="")
        assert _due_ids(box) == ["later"]  # the session's order survived the rebuild
        assert box.prune(DeliveryStatus.DELIVERED, 1000.0, 10) == 2
        assert box._db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0  # cascades still
    finally:
        box.close()


def test_hot_path_statements_seek_indexes_and_never_scan(sqlite_outbox: SqliteOutbox) -> None:
    statements: list[str] = []
    for i in range(50):
        sqlite_outbox.add(_new(f"w{i}", session=f"s{i % 7}"))
    sqlite_outbox._db.set_trace_callback(statements.append)
    sqlite_outbox.add(_new("e1", session="s1"))
    due = sqlite_outbox.due("a", 1000.0, 4, exclude=[1, 2])
    sqlite_outbox.next_due("a", exclude=[1])
    asyncio.run(sqlite_outbox.claim("a", 1000.0, 4, exclude=[1, 2]))
    sqlite_outbox.record_attempt(due[0].seq, _attempt(Outcome.RETRY), next_attempt_at=5.0, last_error="")
    sqlite_outbox.record_attempt(due[1].seq, _attempt(Outcome.DELIVERED), last_error="")
    sqlite_outbox.get("a", "e1")
    sqlite_outbox._db.set_trace_callback(None)
    plans = {
        sql: [row[3] for row in sqlite_outbox._db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        for sql in statements
        if sql.split()[0] in {"INSERT", "SELECT", "UPDATE", "DELETE"}
    }
    assert len(plans) >= 6
    for sql, steps in plans.items():
        assert not [s for s in steps if s.startswith("SCAN") or "TEMP B-TREE" in s], (sql, steps)
        if "session_id = " in sql:
            assert any("deliveries_session" in s for s in steps), (sql, steps)


def test_in_memory_outbox_works_without_a_file() -> None:
    box = SqliteOutbox(":memory:")
    try:
        assert box.add(_new("e1"))
        assert _due_ids(box) == ["e1"]
    finally:
        box.close()


def _committed_statuses(path: str) -> dict[str, str]:
    """What another connection sees: only committed rows."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT event_id, status FROM deliveries").fetchall())
    finally:
        db.close()


async def test_attempts_of_one_loop_turn_share_a_commit_made_before_anything_is_claimed(
    sqlite_outbox: SqliteOutbox,
) -> None:
    for event_id, session in (("a1", "s1"), ("a2", "s1"), ("b1", "s2"), ("c1", "s3")):
        sqlite_outbox.add(_new(event_id, session=session))
    heads = sqlite_outbox.due("a", 1000.0, 10)
    assert [d.event_id for d in heads] == ["a1", "b1", "c1"]
    statements: list[str] = []
    sqlite_outbox._db.set_trace_callback(statements.append)
    for head in heads:
        sqlite_outbox.record_attempt(head.seq, _attempt(Outcome.DELIVERED), last_error="")
    assert _committed_statuses(sqlite_outbox.path)["a1"] == "pending"  # not yet: the turn goes on
    # The next head of s1 is claimable only once a1's outcome is committed.
    assert _due_ids(sqlite_outbox) == ["a2"]
    assert _committed_statuses(sqlite_outbox.path) == {
        "a1": "delivered",
        "a2": "pending",
        "b1": "delivered",
        "c1": "delivered",
    }
    assert [s for s in statements if s.split()[0] in {"BEGIN", "COMMIT"}] == ["BEGIN IMMEDIATE", "COMMIT"]


async def test_attempts_are_committed_by_the_end_of_the_loop_turn_without_another_call(
    sqlite_outbox: SqliteOutbox,
) -> None:
    sqlite_outbox.add(_new("e1"))
    (head,) = sqlite_outbox.due("a", 1000.0, 10)
    sqlite_outbox.record_attempt(head.seq, _attempt(Outcome.DELIVERED), last_error="")
    await asyncio.sleep(0)
    assert _committed_statuses(sqlite_outbox.path) == {"e1": "delivered"}


async def test_a_failing_attempt_record_undoes_only_itself_within_the_shared_commit(
    sqlite_outbox: SqliteOutbox,
) -> None:
    sqlite_outbox.add(_new("e1", session="s1"))
    sqlite_outbox.add(_new("e2", session="s2"))
    first, second = sqlite_outbox.due("a", 1000.0, 10)
    sqlite_outbox.record_attempt(first.seq, _attempt(Outcome.DELIVERED), last_error="")
    with pytest.raises(ValueError, match="needs next_attempt_at"):
        sqlite_outbox.record_attempt(second.seq, _attempt(Outcome.RETRY), last_error="")
    with pytest.raises(OutboxError, match="not pending"):
        sqlite_outbox.record_attempt(first.seq, _attempt(Outcome.DELIVERED, number=2), last_error="")
    await asyncio.sleep(0)
    assert _committed_statuses(sqlite_outbox.path) == {"e1": "delivered", "e2": "pending"}
    record = sqlite_outbox.get("a", "e1")
    assert record is not None
    assert [a.attempt for a in record.attempts] == [1]
    stored = sqlite_outbox.get("a", "e2")
    assert stored is not None
    assert stored.attempts == ()


class _FailingCommit:
    """The outbox's connection, with its next COMMIT failing as a full disk would."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.fail_next_commit = True

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail_next_commit:
            self.fail_next_commit = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


async def test_a_failed_end_of_turn_commit_makes_the_next_claim_fail_then_the_attempt_is_pending_again(
    sqlite_outbox: SqliteOutbox,
) -> None:
    sqlite_outbox.add(_new("e1"))
    (head,) = sqlite_outbox.due("a", 1000.0, 10)
    real = sqlite_outbox._db
    sqlite_outbox._db = _FailingCommit(real)  # type: ignore[assignment]
    try:
        sqlite_outbox.record_attempt(head.seq, _attempt(Outcome.DELIVERED), last_error="")
        await asyncio.sleep(0)  # the end of the turn: its commit fails
        # The lane's claim sees the failure (and backs off) rather than resending at once...
        with pytest.raises(OutboxError, match="disk is full"):
            sqlite_outbox.due("a", 1000.0, 10)
        # ...then finds the delivery pending again, with no attempt kept.
        assert _due_ids(sqlite_outbox) == ["e1"]
    finally:
        sqlite_outbox._db = real
    record = sqlite_outbox.get("a", "e1")
    assert record is not None
    assert record.attempts == ()
