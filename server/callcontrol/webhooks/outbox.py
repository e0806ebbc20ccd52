"""The durable outbox: every stored event and every delivery attempt, in SQLite.

Why SQLite, and how:

* WAL journal with ``synchronous=NORMAL``: a commit is an append to the WAL
  file with no fsync (about 50 us per ``emit`` at the median), and a
  committed event survives the process being killed (SIGKILL, OOM, a crash):
  the data is in the OS page cache and SQLite recovers the WAL on the next
  open. It does not survive power loss or a kernel crash; ``durable_sync=True``
  selects ``synchronous=FULL`` (an fsync per commit) for that, at the cost of
  a disk flush inside ``emit``.
* Checkpoints, where the fsyncs of NORMAL happen, run on a thread of their
  own (``_Checkpointer``) instead of inside whichever commit crosses SQLite's
  threshold, which would put a few milliseconds into some ``emit``.
* One connection, used only on the event-loop thread; each change is a
  single short transaction. Every query on the hot path is an index seek,
  never a walk over the backlog, so a large queue behind a dead receiver
  slows nobody down. The statements name their index (``INDEXED BY``):
  without ANALYZE statistics the planner otherwise picks deliveries_listing
  for the per-session lookups and walks every pending row of the application.
* Per-session order is kept in the table: of the pending rows of one
  (application, session) only the lowest ``seq`` is the *head*, and only
  heads can be claimed. Finishing a head (delivered or failed) promotes the
  next one in the same transaction, so the invariant holds across crashes.
* Attempts are group-committed: ``record_attempt`` writes inside a
  transaction that stays open until the end of the event-loop turn, or until
  the next other call on the outbox (``claim`` above all), whichever comes
  first. Attempts that end together (a lane of 16 draining a backlog) then
  share one commit: about a third of the WAL pages and half the SQLite time
  per attempt. Nothing is claimed, listed or counted before the attempts written
  before it are committed, so the next event of a session is never sent
  before its predecessor's outcome is durable, and a failed commit surfaces
  from that call (the lane backs off); the attempts it held stay pending and
  are sent again with the same webhook-id, as after a crash between a send
  and its record.
* An advisory lock on ``<path>.lock`` keeps a second process from opening
  the same file and delivering the same events twice; the kernel drops it
  when the owner dies, even by SIGKILL.

Times are unix seconds (REAL): they must mean the same after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Final, Protocol

SCHEMA_VERSION: Final = 2
_CHECKPOINT_EVERY: Final = 200
# A safety valve: under a sustained burst the background checkpoint never
# catches up with the writer, and the WAL only restarts once it has; past this
# many pages (40 MiB) the writer checkpoints inline, as SQLite does by default.
_INLINE_CHECKPOINT_PAGES: Final = 10000

log = logging.getLogger(__name__)

# ``seq`` is the rowid (no AUTOINCREMENT): a new row takes max(seq) + 1, so emit order
# within a session holds, and each commit of ``add`` skips the sqlite_sequence page (one
# of the seven WAL pages it wrote). A seq can come back only after the newest rows were
# pruned, and pruning deletes their attempts with them.
_DELIVERIES = """
CREATE TABLE IF NOT EXISTS {name} (
    seq              INTEGER PRIMARY KEY,
    event_id         TEXT    NOT NULL UNIQUE,
    event_type       TEXT    NOT NULL,
    app_id           TEXT    NOT NULL,
    session_id       TEXT    NOT NULL,
    body             BLOB    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    head             INTEGER NOT NULL,
    created_at       REAL    NOT NULL,
    next_attempt_at  REAL    NOT NULL,
    round_started_at REAL    NOT NULL,
    round_attempts   INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT    NOT NULL DEFAULT '',
    finished_at      REAL
);
"""

_INDEXES = """
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (app_id, next_attempt_at, seq)
    WHERE status = 'pending' AND head = 1;
CREATE INDEX IF NOT EXISTS deliveries_session ON deliveries (app_id, session_id, seq)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_listing ON deliveries (app_id, status, seq);
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (status, finished_at)
    WHERE status != 'pending';
"""

_SCHEMA = f"""
BEGIN IMMEDIATE;
{_DELIVERIES.format(name="deliveries")}
{_INDEXES}
CREATE TABLE IF NOT EXISTS attempts (
    delivery_seq INTEGER NOT NULL REFERENCES deliveries (seq) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    started_at   REAL    NOT NULL,
    url          TEXT    NOT NULL,
    status_code  INTEGER,
    error        TEXT    NOT NULL,
    latency_ms   REAL    NOT NULL,
    outcome      TEXT    NOT NULL,
    PRIMARY KEY (delivery_seq, attempt)
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

# Version 1 had ``seq INTEGER PRIMARY KEY AUTOINCREMENT``; SQLite cannot drop that in place,
# so the table is rebuilt (its documented 12-step way: foreign keys off around it, or dropping
# the old table would cascade into attempts). One transaction: a crash leaves version 1.
_MIGRATE_FROM_1 = f"""
BEGIN IMMEDIATE;
{_DELIVERIES.format(name="deliveries_v2")}
INSERT INTO deliveries_v2 SELECT * FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;
{_INDEXES}
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""  # noqa: S608 - formatted from constants only

_DETAIL_COLUMNS = (
    "seq, event_id, event_type, app_id, session_id, status, created_at, attempts, "
    "next_attempt_at, finished_at, last_error, last_status_code"
)


class OutboxError(Exception):
    """The outbox cannot be opened or written (disk, lock, schema)."""


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Outcome(StrEnum):
    """What one attempt led to."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class NewDelivery:
    event_id: str
    event_type: str
    app_id: str
    session_id: str
    body: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A session head whose next attempt is due: what the dispatcher sends."""

    seq: int
    event_id: str
    app_id: str
    session_id: str
    body: bytes
    next_attempt_at: float
    round_started_at: float
    round_attempts: int
    attempts: int


@dataclass(frozen=True, slots=True)
class Claim:
    """What a lane may send now, and when to look again.

    ``next_at``: when the earliest head neither claimed nor excluded is due;
    None when there is none, or when the claim filled every free slot.
    """

    due: Sequence[DueDelivery]
    next_at: float | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt: int
    started_at: float
    url: str
    status_code: int | None
    error: str
    latency_ms: float
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery as the API shows it; ``body`` and ``attempts`` only when asked for."""

    seq: int
    event_id: str
    event_type: str
    app_id: str
    session_id: str
    status: DeliveryStatus
    created_at: float
    attempt_count: int
    next_attempt_at: float | None
    finished_at: float | None
    last_error: str
    last_status_code: int | None
    body: bytes = b""
    attempts: tuple[AttemptRecord, ...] = ()


class Outbox(Protocol):
    """What the webhook service and its lanes need of a store (SQLite here, Redis in a cluster).

    Every method but ``claim`` is synchronous on the event loop: ``emit`` is,
    and an event must be stored before it returns. ``claim`` is what a lane
    waits on, so a store across the network answers it off the loop. Errors
    of the store are ``OutboxError``.
    """

    def add(self, new: NewDelivery) -> bool: ...

    def record_attempt(
        self, seq: int, attempt: AttemptRecord, *, next_attempt_at: float | None = None, last_error: str
    ) -> None: ...

    def fail_pending(self, app_id: str, reason: str, now: float) -> int: ...

    def requeue(self, app_id: str, event_id: str, now: float) -> DeliveryRecord | None: ...

    def prune(self, status: DeliveryStatus, finished_before: float, limit: int) -> int: ...

    def due(
        self, app_id: str, now: float, limit: int, exclude: Collection[int] = ()
    ) -> list[DueDelivery]: ...

    def next_due(self, app_id: str, exclude: Collection[int] = ()) -> float | None: ...

    async def claim(self, app_id: str, now: float, limit: int, exclude: Collection[int]) -> Claim:
        """``due`` and then ``next_due`` of what is left, as one call."""
        ...

    def pending_count(self) -> int: ...

    def oldest_pending_since(self) -> float | None: ...

    def pending_apps(self) -> set[str]: ...

    def get(self, app_id: str, event_id: str) -> DeliveryRecord | None: ...

    def list_deliveries(
        self, app_id: str, status: DeliveryStatus, limit: int, before_seq: int | None = None
    ) -> Sequence[DeliveryRecord]: ...

    def close(self) -> None: ...


def _record(row: sqlite3.Row, body: bytes = b"", attempts: tuple[AttemptRecord, ...] = ()) -> DeliveryRecord:
    status = DeliveryStatus(row["status"])
    return DeliveryRecord(
        seq=row["seq"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        app_id=row["app_id"],
        session_id=row["session_id"],
        status=status,
        created_at=row["created_at"],
        attempt_count=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if status is DeliveryStatus.PENDING else None,
        finished_at=row["finished_at"],
        last_error=row["last_error"],
        last_status_code=row["last_status_code"],
        body=body,
        attempts=attempts,
    )


def _placeholders(values: Collection[object]) -> str:
    """Only "?" marks are formatted into SQL; values are always bound."""
    return ",".join("?" * len(values))


class _Checkpointer:
    """Folds the WAL back into the database on its own thread and connection.

    With ``synchronous=NORMAL`` the checkpoint is where the fsyncs happen; left
    to SQLite's automatic checkpoint it would run inside whichever commit
    crossed the threshold, i.e. inside some ``emit``, for milliseconds. Here a
    PASSIVE checkpoint runs beside the writer (WAL allows that) and the WAL
    restarts from its beginning once it has been copied and the writer pauses.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="outbox-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def close(self) -> None:
        self._closing = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closing:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("outbox checkpoint failed (retried later): %s", exc)
        finally:
            db.close()


class SqliteOutbox:
    """The embedded outbox. Not thread-safe: use it from the event loop only."""

    def __init__(self, path: str, *, durable_sync: bool = False) -> None:
        self.path = path
        self._lock_file = self._lock(path)
        self._checkpointer: _Checkpointer | None = None
        self._commits = 0
        self._flush_scheduled = False
        self._open = True
        self._deferred_error: OutboxError | None = None
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            self._unlock()
            raise OutboxError(f"webhooks.outbox_path {path}: {exc}") from exc
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable_sync else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA busy_timeout = 5000")
            in_memory = path == ":memory:"
            if not in_memory:
                self._db.execute(f"PRAGMA wal_autocheckpoint = {_INLINE_CHECKPOINT_PAGES}")
            self._migrate()
        except (sqlite3.Error, OutboxError) as exc:
            self._db.close()
            self._unlock()
            if isinstance(exc, OutboxError):
                raise
            raise OutboxError(f"webhooks.outbox_path {path}: {exc}") from exc
        if not in_memory:
            self._checkpointer = _Checkpointer(path)

    @staticmethod
    def _lock(path: str) -> IO[bytes] | None:
        if path == ":memory:":
            return None
        try:
            handle = open(f"{path}.lock", "ab")  # noqa: SIM115 - held for the outbox's lifetime
        except OSError as exc:
            raise OutboxError(f"webhooks.outbox_path {path}: {exc}") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise OutboxError(f"webhooks.outbox_path {path}: already in use (another gateway?)") from exc
        return handle

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise OutboxError(f"outbox schema version {version}; this gateway knows {SCHEMA_VERSION}")
        if version == 0:
            self._db.executescript(_SCHEMA)
        elif version == 1:
            self._db.execute("PRAGMA foreign_keys = OFF")
            try:
                self._db.executescript(_MIGRATE_FROM_1)
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._db.execute("PRAGMA foreign_keys = ON")
            log.info("outbox %s: schema migrated from version 1 to %d", self.path, SCHEMA_VERSION)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._flush()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._committed()

    def _committed(self) -> None:
        """Ask for a checkpoint every _CHECKPOINT_EVERY commits (about that many WAL pages x5)."""
        self._commits += 1
        if self._commits >= _CHECKPOINT_EVERY and self._checkpointer is not None:
            self._commits = 0
            self._checkpointer.request()

    def _flush(self) -> None:
        """Commit the attempts recorded so far, first raising, once, a failure of that commit
        made at the end of a loop turn: the lane's claim then backs off instead of sending
        those attempts again at once."""
        if self._deferred_error is not None:
            exc, self._deferred_error = self._deferred_error, None
            raise exc
        self._commit_attempts()

    def _commit_attempts(self) -> None:
        """See the module docstring; a no-op without recorded attempts."""
        if not self._open or not self._db.in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise OutboxError(f"committing recorded attempts: {exc}") from exc
        self._committed()

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._flush_or_keep()

    def _flush_or_keep(self) -> None:
        """Commit where nobody waits on the attempts: a failure is logged and kept for ``_flush``."""
        try:
            self._commit_attempts()
        except OutboxError as exc:
            # Those attempts are pending again and are sent again (same webhook-id).
            log.error("%s; the deliveries stay pending", exc)
            self._deferred_error = exc

    def close(self) -> None:
        self._flush_or_keep()
        self._open = False
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self._db.close()
        self._unlock()

    # -- the write path -------------------------------------------------

    def add(self, new: NewDelivery) -> bool:
        """Store one event, committed before returning; False if its id was already stored."""
        # The attempts' failed commit is theirs (they stay pending), not this event's...
        self._flush_or_keep()
        if self._db.in_transaction:
            # ...unless it left a transaction open: the insert would not commit on its own.
            raise OutboxError(f"storing event {new.event_id}: the outbox is stuck in a transaction")
        try:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO deliveries (event_id, event_type, app_id, session_id, body, status,"
                " head, created_at, next_attempt_at, round_started_at)"
                " VALUES (?, ?, ?, ?, ?, 'pending',"
                " NOT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_session"
                "             WHERE app_id = ? AND session_id = ? AND status = 'pending'),"
                " ?, ?, ?)",
                (
                    new.event_id,
                    new.event_type,
                    new.app_id,
                    new.session_id,
                    new.body,
                    new.app_id,
                    new.session_id,
                    new.created_at,
                    new.created_at,
                    new.created_at,
                ),
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"storing event {new.event_id}: {exc}") from exc
        self._committed()
        return cursor.rowcount == 1

    def record_attempt(
        self, seq: int, attempt: AttemptRecord, *, next_attempt_at: float | None = None, last_error: str
    ) -> None:
        """Log an attempt and apply its outcome, atomically; committed by the end of the loop turn.

        Within the loop turn's open transaction each attempt is a savepoint, so
        one that fails (a delivery no longer pending) undoes only itself.
        """
        with self._attempt_savepoint() as db:
            db.execute(
                "INSERT INTO attempts (delivery_seq, attempt, started_at, url, status_code, error,"
                " latency_ms, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    attempt.attempt,
                    attempt.started_at,
                    attempt.url,
                    attempt.status_code,
                    attempt.error,
                    attempt.latency_ms,
                    attempt.outcome.value,
                ),
            )
            if attempt.outcome is Outcome.RETRY:
                if next_attempt_at is None:
                    raise ValueError("a retry needs next_attempt_at")
                db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, round_attempts = round_attempts + 1,"
                    " next_attempt_at = ?, last_status_code = ?, last_error = ? WHERE seq = ?",
                    (next_attempt_at, attempt.status_code, last_error, seq),
                )
            else:
                status = (
                    DeliveryStatus.DELIVERED
                    if attempt.outcome is Outcome.DELIVERED
                    else DeliveryStatus.FAILED
                )
                self._finish(
                    db,
                    seq,
                    status,
                    attempt.started_at + attempt.latency_ms / 1000,
                    last_error,
                    attempt.status_code,
                )

    @contextmanager
    def _attempt_savepoint(self) -> Iterator[sqlite3.Connection]:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            # No loop turn to end (a script, a test): a transaction of its own.
            with self._transaction() as db:
                yield db
            return
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("SAVEPOINT attempt")
        try:
            yield self._db
        except BaseException:
            try:
                self._db.execute("ROLLBACK TO attempt")
                self._db.execute("RELEASE attempt")
            except sqlite3.Error:
                # The failure ended the whole transaction: the batch is pending again.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise
        finally:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush_soon)
        self._db.execute("RELEASE attempt")

    def fail_pending(self, app_id: str, reason: str, now: float) -> int:
        """Fail every pending delivery of an application without an attempt (it lost its URL)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE deliveries SET status = 'failed', head = 0, finished_at = ?, last_error = ?"
                " WHERE app_id = ? AND status = 'pending'",
                (now, reason, app_id),
            )
        return cursor.rowcount

    @staticmethod
    def _finish(
        db: sqlite3.Connection,
        seq: int,
        status: DeliveryStatus,
        now: float,
        last_error: str,
        status_code: int | None,
    ) -> None:
        row = db.execute(
            "UPDATE deliveries SET status = ?, head = 0, finished_at = ?, last_error = ?,"
            " last_status_code = ?, attempts = attempts + 1"
            " WHERE seq = ? AND status = 'pending' RETURNING app_id, session_id",
            (status.value, now, last_error, status_code, seq),
        ).fetchone()
        if row is None:
            raise OutboxError(f"delivery {seq} is not pending")
        db.execute(
            "UPDATE deliveries SET head = 1 WHERE seq = (SELECT min(seq) FROM deliveries"
            " INDEXED BY deliveries_session WHERE app_id = ? AND session_id = ? AND status = 'pending')",
            (row["app_id"], row["session_id"]),
        )

    def requeue(self, app_id: str, event_id: str, now: float) -> DeliveryRecord | None:
        """Queue a finished delivery again with a fresh budget; None if it is unknown.

        Raises ``ValueError`` when it is still pending.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT seq, session_id, status FROM deliveries WHERE app_id = ? AND event_id = ?",
                (app_id, event_id),
            ).fetchone()
            if row is None:
                return None
            if row["status"] == DeliveryStatus.PENDING:
                raise ValueError("the delivery is still pending")
            db.execute(
                "UPDATE deliveries SET status = 'pending', finished_at = NULL, next_attempt_at = ?,"
                " round_started_at = ?, round_attempts = 0, last_error = '',"
                " head = NOT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_session"
                "                    WHERE app_id = ? AND session_id = ? AND status = 'pending')"
                " WHERE seq = ?",
                (now, now, app_id, row["session_id"], row["seq"]),
            )
        return self.get(app_id, event_id)

    def prune(self, status: DeliveryStatus, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` finished deliveries (and their attempts); returns how many."""
        if status is DeliveryStatus.PENDING:
            raise ValueError("pending deliveries are never pruned")
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries"
                " WHERE status = ? AND finished_at < ? LIMIT ?)",
                (status.value, finished_before, limit),
            )
        return cursor.rowcount

    # -- the dispatcher's reads -----------------------------------------

    def due(self, app_id: str, now: float, limit: int, exclude: Collection[int] = ()) -> list[DueDelivery]:
        """Session heads of one application due by ``now``, earliest first."""
        self._flush()
        rows = self._db.execute(
            "SELECT seq, event_id, app_id, session_id, body, next_attempt_at, round_started_at,"  # noqa: S608
            " round_attempts, attempts FROM deliveries INDEXED BY deliveries_due"
            " WHERE app_id = ? AND status = 'pending' AND head = 1 AND next_attempt_at <= ?"
            f" AND seq NOT IN ({_placeholders(exclude)}) ORDER BY next_attempt_at, seq LIMIT ?",
            (app_id, now, *exclude, limit),
        ).fetchall()
        return [DueDelivery(*tuple(row)) for row in rows]

    def next_due(self, app_id: str, exclude: Collection[int] = ()) -> float | None:
        """When the earliest head of one application (not in ``exclude``) is due."""
        self._flush()
        row = self._db.execute(
            "SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_due"  # noqa: S608
            " WHERE app_id = ? AND status = 'pending' AND head = 1"
            f" AND seq NOT IN ({_placeholders(exclude)}) ORDER BY next_attempt_at LIMIT 1",
            (app_id, *exclude),
        ).fetchone()
        return None if row is None else float(row[0])

    async def claim(self, app_id: str, now: float, limit: int, exclude: Collection[int]) -> Claim:
        """``due``, then ``next_due`` unless every slot is taken, in one query; returns without
        waiting. The heads come in due order without a bound on ``now``: the first one not yet
        due is ``next_at`` and ends the read, so no row after it is fetched."""
        self._flush()
        cursor = self._db.cursor()
        cursor.row_factory = None  # tuples: no Row object per row
        try:
            cursor.execute(
                "SELECT seq, event_id, app_id, session_id, body, next_attempt_at, round_started_at,"  # noqa: S608
                " round_attempts, attempts FROM deliveries INDEXED BY deliveries_due"
                " WHERE app_id = ? AND status = 'pending' AND head = 1"
                # A != per seq in flight, not NOT IN (...): no IN list is built for each run.
                + " AND seq != ?" * len(exclude)
                + " ORDER BY next_attempt_at, seq LIMIT ?",
                (app_id, *exclude, limit),
            )
            due: list[DueDelivery] = []
            for row in cursor:
                if row[5] > now:
                    return Claim(due, float(row[5]))
                due.append(DueDelivery(*row))
            return Claim(due, None)
        finally:
            cursor.close()  # an unfinished statement would hold its read transaction open

    def pending_count(self) -> int:
        self._flush()
        return int(self._db.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[0])

    def oldest_pending_since(self) -> float | None:
        """When the oldest pending delivery's round began (its creation or redelivery)."""
        self._flush()
        row = self._db.execute(
            "SELECT min(round_started_at) FROM deliveries WHERE status = 'pending'"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def pending_apps(self) -> set[str]:
        self._flush()
        rows = self._db.execute("SELECT DISTINCT app_id FROM deliveries WHERE status = 'pending'")
        return {row[0] for row in rows}

    # -- the API's reads ------------------------------------------------

    def get(self, app_id: str, event_id: str) -> DeliveryRecord | None:
        """One delivery of one application, with its body and attempts."""
        self._flush()
        row = self._db.execute(
            f"SELECT {_DETAIL_COLUMNS}, body FROM deliveries WHERE app_id = ? AND event_id = ?",  # noqa: S608
            (app_id, event_id),
        ).fetchone()
        if row is None:
            return None
        attempts = tuple(
            AttemptRecord(
                attempt=a["attempt"],
                started_at=a["started_at"],
                url=a["url"],
                status_code=a["status_code"],
                error=a["error"],
                latency_ms=a["latency_ms"],
                outcome=Outcome(a["outcome"]),
            )
            for a in self._db.execute(
                "SELECT * FROM attempts WHERE delivery_seq = ? ORDER BY attempt", (row["seq"],)
            )
        )
        return _record(row, bytes(row["body"]), attempts)

    def list_deliveries(
        self, app_id: str, status: DeliveryStatus, limit: int, before_seq: int | None = None
    ) -> Sequence[DeliveryRecord]:
        """Deliveries of one application in one status, newest first."""
        self._flush()
        rows = self._db.execute(
            f"SELECT {_DETAIL_COLUMNS} FROM deliveries INDEXED BY deliveries_listing"  # noqa: S608
            " WHERE app_id = ? AND status = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (app_id, status.value, before_seq if before_seq is not None else 2**63 - 1, limit),
        ).fetchall()
        return [_record(row) for row in rows]
