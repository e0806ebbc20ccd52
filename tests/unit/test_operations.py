"""The operation state machine, deadlines, idempotency and retention (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callcontrol.errors import InvalidArgument, NotFound, ResourceExhausted
from callcontrol.operations import TRANSITIONS, Operation, OperationStore, Status


def _store(retention: int = 100, **limits: int) -> tuple[OperationStore, list[Operation]]:
    finished: list[Operation] = []
    return OperationStore(retention_per_app=retention, on_finished=finished.append, **limits), finished


def _start(
    store: OperationStore,
    uid: str = "u1",
    command: str = "answer",
    timeout_ms: int = 2000,
    app_id: str = "app",
    session_id: str = "s1",
) -> Operation:
    return store.start(
        app_id=app_id, session_id=session_id, command=command, command_uid=uid, timeout_ms=timeout_ms
    )


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


async def test_one_apps_burst_does_not_evict_another_apps_operations() -> None:
    store, _ = _store(retention=10)
    mine = _start(store, uid="mine", app_id="a")
    store.finish(mine.operation_id, Status.SUCCEEDED)
    for n in range(100):
        op = _start(store, uid=f"burst-{n}", app_id="b", session_id=f"s{n}")
        store.finish(op.operation_id, Status.SUCCEEDED)

    assert store.find("a", "s1", "mine", "answer") == store.get("a", mine.operation_id)
    # The bursting app is bounded by its own retention.
    assert store.find("b", "s0", "burst-0", "answer") is None
    assert len(store) == 11


async def test_in_progress_operations_are_capped_per_session_and_per_app() -> None:
    store, _ = _store(max_in_progress_per_session=2, max_in_progress_per_app=3)
    first = _start(store, uid="1")
    _start(store, uid="2")
    with pytest.raises(ResourceExhausted, match="session s1"):
        _start(store, uid="3")
    _start(store, uid="3", session_id="s2")
    with pytest.raises(ResourceExhausted, match="application"):
        _start(store, uid="4", session_id="s3")
    # Another application has its own share.
    _start(store, uid="1", app_id="other")
    # A finished one frees its place, and the refused key was never taken.
    store.finish(first.operation_id, Status.SUCCEEDED)
    assert store.find("app", "s1", "3", "answer") is None
    _start(store, uid="3")
    store.shutdown()


async def test_open_watches_are_capped_per_app_and_freed_when_they_end() -> None:
    store, _ = _store(max_watchers_per_app=2)
    op = _start(store)
    other = _start(store, app_id="other")
    watches = [store.watch("app", op.operation_id) for _ in range(3)]
    await watches[0].__anext__()
    await watches[1].__anext__()
    with pytest.raises(ResourceExhausted, match="watches"):
        await watches[2].__anext__()
    other_watch = store.watch("other", other.operation_id)
    assert (await other_watch.__anext__()).status is Status.IN_PROGRESS
    await watches[0].aclose()
    again = store.watch("app", op.operation_id)
    assert (await again.__anext__()).status is Status.IN_PROGRESS
    await again.aclose()
    await watches[1].aclose()
    await other_watch.aclose()
    store.shutdown()
