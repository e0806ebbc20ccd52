"""The operation state machine, deadlines, idempotency and retention (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callcontrol.errors import InvalidArgument, NotFound
from callcontrol.operations import TRANSITIONS, Operation, OperationStore, Status


def _store(retention: int = 100) -> tuple[OperationStore, list[Operation]]:
    finished: list[Operation] = []
    return OperationStore(retention=retention, on_finished=finished.append), finished


def _start(
    store: OperationStore, uid: str = "u1", command: str = "answer", timeout_ms: int = 2000
) -> Operation:
    return store.start(app_id="app", session_id="s1", command=command, command_uid=uid, timeout_ms=timeout_ms)


def test_terminal_states_have_no_exits() -> None:
    assert TRANSITIONS[Status.IN_PROGRESS] == {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT}
    assert all(not TRANSITIONS[s] for s in (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT))


async def test_finish_reports_once_and_a_late_outcome_is_ignored() -> None:
    store, finished = _store()
    op = _start(store)
    done = store.finish(op.operation_id, Status.SUCCEEDED)
    assert done is not None
    assert done.status is Status.SUCCEEDED
    assert done.finished_at is not None
    assert store.finish(op.operation_id, Status.FAILED, "late") is None
    assert [o.status for o in finished] == [Status.SUCCEEDED]
    assert store.get("app", op.operation_id).status is Status.SUCCEEDED


async def test_deadline_times_the_operation_out() -> None:
    store, finished = _store()
    op = _start(store, timeout_ms=20)
    watch = store.watch("app", op.operation_id)
    states = [o.status async for o in watch]
    assert states == [Status.IN_PROGRESS, Status.TIMED_OUT]
    assert finished[0].reason == "timeout"
    assert store.finish(op.operation_id, Status.SUCCEEDED) is None


async def test_idempotency_key_finds_the_first_operation_and_rejects_another_command() -> None:
    store, _ = _store()
    op = _start(store, uid="k")
    assert store.find("app", "s1", "k", "answer") == op
    assert store.find("other-app", "s1", "k", "answer") is None
    assert store.find("app", "s2", "k", "answer") is None
    with pytest.raises(InvalidArgument):
        store.find("app", "s1", "k", "hangup")


async def test_reusing_a_key_names_the_first_command_in_plain_english() -> None:
    store, _ = _store()
    _start(store, uid="a", command="answer")
    _start(store, uid="h", command="hangup")
    with pytest.raises(InvalidArgument) as answer_taken:
        store.find("app", "s1", "a", "disconnect")
    with pytest.raises(InvalidArgument) as hangup_taken:
        store.find("app", "s1", "h", "answer")
    assert (
        answer_taken.value.violations[0].description == "already used for an answer command on this session"
    )
    assert hangup_taken.value.violations[0].description == "already used for a hangup command on this session"


async def test_retention_bounds_finished_operations_and_their_keys() -> None:
    store, _ = _store(retention=10)
    ids = []
    for n in range(50):
        op = _start(store, uid=f"u{n}")
        store.finish(op.operation_id, Status.SUCCEEDED)
        ids.append(op.operation_id)
    pending = _start(store, uid="pending")
    assert len(store) == 11
    with pytest.raises(NotFound):
        store.get("app", ids[0])
    assert store.find("app", "s1", "u0", "answer") is None
    assert store.get("app", ids[-1]).status is Status.SUCCEEDED
    assert store.get("app", pending.operation_id).status is Status.IN_PROGRESS
    store.shutdown()


async def test_another_apps_operation_is_not_found() -> None:
    store, _ = _store()
    op = _start(store)
    with pytest.raises(NotFound):
        store.get("someone-else", op.operation_id)
    store.shutdown()


async def test_watchers_see_every_change_in_order() -> None:
    store, _ = _store()
    op = _start(store)
    watches = [store.watch("app", op.operation_id) for _ in range(3)]
    firsts = [await w.__anext__() for w in watches]
    store.finish(op.operation_id, Status.FAILED, "call_hangup", "gone")

    async def rest(w: AsyncIterator[Operation]) -> list[Operation]:
        return [o async for o in w]

    rests = await asyncio.gather(*(rest(w) for w in watches))
    assert all(f.status is Status.IN_PROGRESS for f in firsts)
    assert all([o.status for o in r] == [Status.FAILED] for r in rests)
