"""The gateway's lifecycle events and the in-process stream that carries them.

Each event is a frozen dataclass named after its webhook type. The core
publishes them in the order they happen; sinks (the webhook outbox, tests)
receive every event synchronously, in publication order, on the event loop.
A sink that must not lose events (the outbox) stores the event inside
``emit``: an event counts as emitted once every sink has returned.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Protocol


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    type: ClassVar[str]
    app_id: str
    session_id: str
    event_id: str = field(default_factory=_new_event_id)
    occurred_at: datetime = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallInitiated(_Event):
    """A call was handed to the gateway and has a known owner."""

    type: ClassVar[str] = "call.initiated"
    caller_number: str
    destination_number: str
    direction: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered(_Event):
    """FreeSWITCH confirmed the answer (CHANNEL_EXECUTE_COMPLETE); once per call."""

    type: ClassVar[str] = "call.answered"


#: call.hangup's ``reason`` when the cause is not FreeSWITCH's (then it is "UNKNOWN").
CONNECTION_LOST = "connection_lost"  # the socket went before FreeSWITCH said the call ended
CAUSE_NOT_GIVEN = "cause_not_given"  # FreeSWITCH said it ended (linger notice), gave no cause
HANGUP_REASONS = (CONNECTION_LOST, CAUSE_NOT_GIVEN)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallHangup(_Event):
    """The call ended: FreeSWITCH's cause, or why the gateway could not learn it."""

    type: ClassVar[str] = "call.hangup"
    cause: str
    q850_code: int | None = None
    sip_code: int | None = None
    # Empty when ``cause`` is FreeSWITCH's (from CHANNEL_HANGUP_COMPLETE, or
    # CHANNEL_HANGUP when the complete event never came); else one of
    # HANGUP_REASONS, and cause is "UNKNOWN".
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult(_Event):
    """The outcome of one operation."""

    type: ClassVar[str] = "command.result"
    operation_id: str
    command: str
    command_uid: str
    status: str  # "succeeded", "failed" or "timed_out"
    reason: str = ""
    message: str = ""


LifecycleEvent = CallInitiated | CallAnswered | CallHangup | CommandResult

EVENT_TYPES: tuple[type[_Event], ...] = (CallInitiated, CallAnswered, CallHangup, CommandResult)


class EventSink(Protocol):
    def emit(self, event: LifecycleEvent) -> None: ...


class EventStream:
    """Fans published events out to sinks and to async subscribers."""

    def __init__(self) -> None:
        self._sinks: list[EventSink] = []
        self._subscribers: list[asyncio.Queue[LifecycleEvent]] = []  # one per Subscription

    def add_sink(self, sink: EventSink) -> Callable[[], None]:
        """Register a sink; returns a function that removes it."""
        self._sinks.append(sink)
        return lambda: self._sinks.remove(sink)

    def publish(self, event: LifecycleEvent) -> None:
        for sink in self._sinks:
            sink.emit(event)
        for subscription in self._subscribers:
            subscription.put_nowait(event)

    def subscribe(self) -> Subscription:
        """Receive every event published from this call on, in order."""
        return Subscription(self._subscribers)


class Subscription:
    """An unbounded, ordered view of the stream; registered when created."""

    def __init__(self, registry: list[asyncio.Queue[LifecycleEvent]]) -> None:
        self._registry = registry
        self._queue: asyncio.Queue[LifecycleEvent] = asyncio.Queue()
        registry.append(self._queue)

    async def get(self) -> LifecycleEvent:
        return await self._queue.get()

    def get_nowait(self) -> LifecycleEvent | None:
        """The next queued event, or None when nothing is queued."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        if self._queue in self._registry:
            self._registry.remove(self._queue)

    def __aiter__(self) -> AsyncIterator[LifecycleEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[LifecycleEvent]:
        while True:
            yield await self._queue.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
