"""The session registry remembers ended sessions per application."""

from __future__ import annotations

import pytest

from callcontrol.errors import FailedPrecondition, NotFound
from callcontrol.sessions import Session, SessionRegistry, SessionState


def _add(registry: SessionRegistry, session_id: str, app_id: str) -> None:
    assert registry.add(Session(session_id, app_id, "1000", "8084", "inbound"))


def test_another_apps_ended_calls_do_not_push_out_my_disconnected_session() -> None:
    registry = SessionRegistry(3)
    _add(registry, "mine", "a")
    registry.end("mine", SessionState.DISCONNECTED)
    for n in range(10):
        _add(registry, f"theirs-{n}", "b")
        registry.end(f"theirs-{n}", SessionState.HANGUP)

    with pytest.raises(FailedPrecondition, match="disconnected"):
        registry.for_command("a", "mine")
    # The busy application's own memory is bounded: its oldest ended call is forgotten.
    with pytest.raises(NotFound, match="not found"):
        registry.for_command("b", "theirs-0")
    with pytest.raises(NotFound, match="has ended"):
        registry.for_command("b", "theirs-9")


def test_a_session_id_seen_again_is_live_and_no_longer_remembered_as_ended() -> None:
    registry = SessionRegistry(3)
    _add(registry, "s", "a")
    registry.end("s", SessionState.DISCONNECTED)
    _add(registry, "s", "a")
    assert registry.for_command("a", "s").state is SessionState.RINGING
    registry.end("s", SessionState.HANGUP)
    with pytest.raises(NotFound, match="has ended"):
        registry.for_command("a", "s")
