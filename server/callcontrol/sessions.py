"""The session registry: which calls exist, who owns them, their state.

A session is one call that FreeSWITCH handed to the gateway over an outbound
socket. Ended sessions are remembered for a while (bounded per application, so
one application's burst of calls cannot make another's memory short) so that a
late command gets a precise error (disconnected vs unknown) instead of a guess.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from callcontrol.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound


class SessionState(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    HANGUP = "hangup"
    DISCONNECTED = "disconnected"


@dataclass(slots=True)
class Session:
    session_id: str
    app_id: str
    caller_number: str
    destination_number: str
    direction: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    answered_at: datetime | None = None
    state: SessionState = SessionState.RINGING
    #: call.answered has been published (it fires once per call)
    answer_reported: bool = False

    @property
    def accepts_commands(self) -> bool:
        return self.state in (SessionState.RINGING, SessionState.ANSWERED)


class SessionRegistry:
    """In-process registry; single-threaded (the event loop owns it).

    Its methods are the whole interface the API and the controller use, so a
    shared directory (Redis, for several replicas) can implement the same.
    """

    def __init__(self, remember_ended_per_app: int = 10000) -> None:
        self._live: dict[str, Session] = {}
        self._ended: dict[str, Session] = {}
        self._ended_order: dict[str, OrderedDict[str, None]] = {}  # per app, oldest first
        self._remember_ended = remember_ended_per_app

    def __len__(self) -> int:
        return len(self._live)

    def add(self, session: Session) -> bool:
        """Register a new call; False if one with that id is already live."""
        if session.session_id in self._live:
            return False
        self._forget(session.session_id)
        self._live[session.session_id] = session
        return True

    def discard(self, session_id: str) -> None:
        """Forget a live session that was never announced (cluster mode let its socket go)."""
        self._live.pop(session_id, None)

    def live(self, session_id: str) -> Session | None:
        return self._live.get(session_id)

    def end(self, session_id: str, state: SessionState) -> Session | None:
        """Move a session out of the live set, remembering how it ended."""
        session = self._live.pop(session_id, None)
        if session is None:
            return None
        session.state = state
        self._ended[session_id] = session
        order = self._ended_order.setdefault(session.app_id, OrderedDict())
        order[session_id] = None
        while len(order) > self._remember_ended:
            old_id, _ = order.popitem(last=False)
            del self._ended[old_id]
        return session

    def _forget(self, session_id: str) -> None:
        old = self._ended.pop(session_id, None)
        if old is not None:
            self._ended_order[old.app_id].pop(session_id, None)

    def lookup(self, app_id: str, session_id: str) -> Session:
        """The caller's live session, or NotFound (also for another app's session)."""
        session = self._live.get(session_id)
        if session is None or session.app_id != app_id:
            raise NotFound(
                f"session {session_id} not found",
                resource_type="session",
                resource_name=session_id,
            )
        return session

    def for_command(self, app_id: str, session_id: str) -> Session:
        """The session a command may act on, with a precise error when it can't."""
        session = self._live.get(session_id) or self._ended.get(session_id)
        if session is None or session.app_id != app_id:
            raise NotFound(
                f"session {session_id} not found",
                resource_type="session",
                resource_name=session_id,
            )
        if session.state is SessionState.DISCONNECTED:
            raise FailedPrecondition(
                f"session {session_id} was disconnected and returned to the dialplan",
                reason="session_disconnected",
            )
        if not session.accepts_commands:
            raise NotFound(
                f"session {session_id} has ended",
                resource_type="session",
                resource_name=session_id,
            )
        return session

    def page(self, app_id: str, page_size: int, page_token: str) -> tuple[list[Session], str]:
        """The app's live sessions ordered by id, after the token's id."""
        after = ""
        if page_token:
            try:
                after = base64.urlsafe_b64decode(page_token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument([FieldViolation("page_token", "not a token from this API")]) from None
        mine = sorted(
            (s for s in self._live.values() if s.app_id == app_id and s.session_id > after),
            key=lambda s: s.session_id,
        )
        chunk = mine[:page_size]
        token = ""
        if len(mine) > page_size:
            token = base64.urlsafe_b64encode(chunk[-1].session_id.encode()).decode()
        return chunk, token
