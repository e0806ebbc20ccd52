"""Operations: the life of one command, from accepted to its outcome.

State machine (a table; terminal states have no exits)::

    in_progress ──▶ succeeded | failed | timed_out

A transition out of a terminal state is refused and logged, never applied, so
a late confirmation after ``timed_out`` cannot rewrite history. Every terminal
transition is reported exactly once through ``on_finished``.

Every bound is per application, so one tenant's traffic can neither evict
another's operations (and with them its idempotency keys) nor use up another's
share: finished operations are kept for reads, watches and idempotency up to
``retention_per_app``, oldest first out; in-progress operations are capped per
application and per session, and so are open watches. Memory stays bounded
under any load.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from callcontrol.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted
from callcontrol.logs import context_with

log = logging.getLogger(__name__)
K = TypeVar("K")


class Status(StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.IN_PROGRESS: frozenset({Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.TIMED_OUT: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    app_id: str
    session_id: str
    command: str
    command_uid: str
    timeout_ms: int
    created_at: datetime
    status: Status = Status.IN_PROGRESS
    finished_at: datetime | None = None
    reason: str = ""
    message: str = ""

    @property
    def done(self) -> bool:
        return not TRANSITIONS[self.status]


class _Entry:
    __slots__ = ("deadline", "op", "watchers")

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.watchers: list[asyncio.Queue[Operation]] = []
        self.deadline: asyncio.TimerHandle | None = None


class OperationStore:
    """In-process operations; single-threaded (the event loop owns it)."""

    def __init__(
        self,
        *,
        retention_per_app: int,
        on_finished: Callable[[Operation], None],
        max_in_progress_per_app: int = 1000,
        max_in_progress_per_session: int = 16,
        max_watchers_per_app: int = 1000,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_uid: dict[tuple[str, str, str], str] = {}
        self._retention = retention_per_app
        # Finished ids per application, oldest first: eviction stays within the app.
        self._finished: dict[str, OrderedDict[str, None]] = {}
        self._live_per_app: Counter[str] = Counter()
        self._live_per_session: Counter[tuple[str, str]] = Counter()
        self._max_live_per_app = max_in_progress_per_app
        self._max_live_per_session = max_in_progress_per_session
        self._watchers_per_app: Counter[str] = Counter()
        self._max_watchers_per_app = max_watchers_per_app
        self._on_finished = on_finished

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, app_id: str, session_id: str, command_uid: str, command: str) -> Operation | None:
        """The operation already started under this idempotency key, if any."""
        existing_id = self._by_uid.get((app_id, session_id, command_uid))
        if existing_id is None:
            return None
        existing = self._entries[existing_id].op
        if existing.command != command:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "command_uid",
                        f"already used for {_with_article(existing.command)} command on this session",
                    )
                ]
            )
        return existing

    def start(
        self, *, app_id: str, session_id: str, command: str, command_uid: str, timeout_ms: int
    ) -> Operation:
        """A new in-progress operation; its deadline starts now.

        When the deadline passes first, the operation ends ``timed_out``.
        """
        key = (app_id, session_id, command_uid)
        if key in self._by_uid:
            raise ValueError(f"idempotency key {key} already has an operation")
        if self._live_per_session[(app_id, session_id)] >= self._max_live_per_session:
            raise ResourceExhausted(
                f"session {session_id} already has {self._max_live_per_session} commands in progress"
            )
        if self._live_per_app[app_id] >= self._max_live_per_app:
            raise ResourceExhausted(f"{self._max_live_per_app} commands of this application are in progress")
        op = Operation(
            operation_id=str(uuid.uuid4()),
            app_id=app_id,
            session_id=session_id,
            command=command,
            command_uid=command_uid,
            timeout_ms=timeout_ms,
            created_at=datetime.now(UTC),
        )
        entry = _Entry(op)
        entry.deadline = asyncio.get_running_loop().call_later(
            timeout_ms / 1000,
            self.finish,
            op.operation_id,
            Status.TIMED_OUT,
            "timeout",
            f"no confirmation from FreeSWITCH within {timeout_ms} ms",
            context=context_with(session_id=session_id, operation_id=op.operation_id),
        )
        self._entries[op.operation_id] = entry
        self._by_uid[key] = op.operation_id
        self._live_per_app[app_id] += 1
        self._live_per_session[(app_id, session_id)] += 1
        return op

    def restore(self, op: Operation) -> None:
        """Hold an operation another replica started and could not finish (cluster adoption).

        It is reported once, like any finished operation, and answers reads and
        repeats of its command from here on.
        """
        if op.operation_id in self._entries or not op.done:
            return
        self._entries[op.operation_id] = _Entry(op)
        self._by_uid[(op.app_id, op.session_id, op.command_uid)] = op.operation_id
        finished = self._finished.setdefault(op.app_id, OrderedDict())
        finished[op.operation_id] = None
        while len(finished) > self._retention:
            old_id, _ = finished.popitem(last=False)
            old = self._entries.pop(old_id).op
            self._by_uid.pop((old.app_id, old.session_id, old.command_uid), None)
        self._on_finished(op)

    def get(self, app_id: str, operation_id: str) -> Operation:
        entry = self._entries.get(operation_id)
        if entry is None or entry.op.app_id != app_id:
            raise NotFound(
                f"operation {operation_id} not found",
                resource_type="operation",
                resource_name=operation_id,
            )
        return entry.op

    def finish(
        self, operation_id: str, status: Status, reason: str = "", message: str = ""
    ) -> Operation | None:
        """Apply a terminal transition; None (and a log line) when it is not allowed."""
        entry = self._entries.get(operation_id)
        if entry is None:
            log.info("outcome %s for unknown or evicted operation %s ignored", status, operation_id)
            return None
        if status not in TRANSITIONS[entry.op.status]:
            log.info("operation %s is already %s; late %s ignored", operation_id, entry.op.status, status)
            return None
        if entry.deadline is not None:
            entry.deadline.cancel()
            entry.deadline = None
        op = replace(entry.op, status=status, finished_at=datetime.now(UTC), reason=reason, message=message)
        entry.op = op
        for queue in entry.watchers:
            queue.put_nowait(op)
        entry.watchers.clear()
        _decrement(self._live_per_app, op.app_id)
        _decrement(self._live_per_session, (op.app_id, op.session_id))
        finished = self._finished.setdefault(op.app_id, OrderedDict())
        finished[operation_id] = None
        while len(finished) > self._retention:
            old_id, _ = finished.popitem(last=False)
            old = self._entries.pop(old_id).op
            self._by_uid.pop((old.app_id, old.session_id, old.command_uid), None)
        self._on_finished(op)
        return op

    async def watch(self, app_id: str, operation_id: str) -> AsyncGenerator[Operation, None]:
        """The current state at once, then every change, ending after a terminal state."""
        op = self.get(app_id, operation_id)
        if op.done:
            yield op
            return
        if self._watchers_per_app[app_id] >= self._max_watchers_per_app:
            raise ResourceExhausted(f"{self._max_watchers_per_app} watches of this application are open")
        # Registered in the same step as the read: no change can slip between.
        queue: asyncio.Queue[Operation] = asyncio.Queue()
        entry = self._entries[operation_id]
        entry.watchers.append(queue)
        self._watchers_per_app[app_id] += 1
        try:
            yield op
            while not op.done:
                op = await queue.get()
                yield op
        finally:
            _decrement(self._watchers_per_app, app_id)
            if queue in entry.watchers:
                entry.watchers.remove(queue)

    def shutdown(self) -> None:
        """Cancel every pending deadline (the loop is going away)."""
        for entry in self._entries.values():
            if entry.deadline is not None:
                entry.deadline.cancel()
                entry.deadline = None


def _with_article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _decrement(counter: Counter[K], key: K) -> None:
    """Count one down; a zero count is dropped so the counter holds only live keys."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
