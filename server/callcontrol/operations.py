"""Operations: the life of one command, from accepted to its outcome.

State machine (a table; terminal states have no exits)::

    in_progress ──▶ succeeded | failed | timed_out

A transition out of a terminal state is refused and logged, never applied, so
a late confirmation after ``timed_out`` cannot rewrite history. Every terminal
transition is reported exactly once through ``on_finished``. Finished
operations are kept for reads, watches and idempotency up to a bound, oldest
first out; memory stays bounded under any load.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from callcontrol.errors import FieldViolation, InvalidArgument, NotFound
from callcontrol.logs import context_with

log = logging.getLogger(__name__)


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

    def __init__(self, *, retention: int, on_finished: Callable[[Operation], None]) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_uid: dict[tuple[str, str, str], str] = {}
        self._retention = retention
        self._finished: OrderedDict[str, None] = OrderedDict()  # ids, oldest first
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
        return op

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
        self._finished[operation_id] = None
        while len(self._finished) > self._retention:
            old_id, _ = self._finished.popitem(last=False)
            old = self._entries.pop(old_id).op
            self._by_uid.pop((old.app_id, old.session_id, old.command_uid), None)
        self._on_finished(op)
        return op

    async def watch(self, app_id: str, operation_id: str) -> AsyncIterator[Operation]:
        """The current state at once, then every change, ending after a terminal state."""
        op = self.get(app_id, operation_id)
        if op.done:
            yield op
            return
        # Registered in the same step as the read: no change can slip between.
        queue: asyncio.Queue[Operation] = asyncio.Queue()
        entry = self._entries[operation_id]
        entry.watchers.append(queue)
        try:
            yield op
            while not op.done:
                op = await queue.get()
                yield op
        finally:
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
