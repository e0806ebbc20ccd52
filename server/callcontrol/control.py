"""Call control: commands in, FreeSWITCH traffic out, outcomes and lifecycle events back.

This is where the three rooms meet: it takes validated commands from the API,
turns them into ESL frames on a call's channel, reads the call's events, moves
sessions and operations through their states, and publishes lifecycle events.
It knows nothing of gRPC and nothing of sockets.

Mapping (DESIGN.md):
* answer      sendmsg execute answer, Event-UUID = operation id; succeeds on the
              CHANNEL_EXECUTE_COMPLETE whose Application-UUID is that id.
* hangup      sendmsg call-command hangup + hangup-cause; succeeds on +OK.
* disconnect  exit; succeeds on +OK; the call returns to the dialplan.

Hangup order: FreeSWITCH's cause comes in CHANNEL_HANGUP and again, complete,
in CHANNEL_HANGUP_COMPLETE. The linger notice usually follows the latter, but
under load and during a FreeSWITCH shutdown it can come before it; answering
it with ``exit`` at once would lose CHANNEL_HANGUP_COMPLETE (FreeSWITCH closes
after ``+OK bye``). So after an early notice the gateway waits, at most
``esl.linger_wait_ms``, and whatever ends a call (the complete event, the
wait running out, a close) reports the best cause read so far.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from callcontrol.causes import Q850_CAUSES, q850_code
from callcontrol.config import GatewayConfig
from callcontrol.errors import Unavailable
from callcontrol.esl.frames import Event, Frame, encode_command, encode_sendmsg
from callcontrol.esl.link import CallChannel, Reply
from callcontrol.events import (
    CAUSE_NOT_GIVEN,
    CONNECTION_LOST,
    CallAnswered,
    CallHangup,
    CallInitiated,
    CommandResult,
    EventStream,
)
from callcontrol.metrics import CommandMetrics
from callcontrol.operations import Operation, OperationStore, Status
from callcontrol.sessions import Session, SessionRegistry, SessionState
from callcontrol.validation import DEFAULT_CAUSE, canonical_uuid, session_id_violation

log = logging.getLogger(__name__)

_CAUSE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_CODE = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class HangupCause:
    """Why FreeSWITCH says the call ended, as far as its events told us."""

    name: str
    q850_code: int | None
    sip_code: int | None

    @classmethod
    def of(cls, event: Event) -> HangupCause | None:
        name = event.get("Hangup-Cause") or ""
        if not _CAUSE_NAME.fullmatch(name):
            # Peer text goes to webhooks only in the shape FreeSWITCH's names have.
            return None
        # CHANNEL_HANGUP has no hangup_cause_q850 yet: FreeSWITCH derives it
        # from the cause the same way (switch_channel_cause_q850).
        code = _int_or_none(event.get("variable_hangup_cause_q850"))
        if code is None and name in Q850_CAUSES:
            code = q850_code(Q850_CAUSES[name])
        return cls(name, code, _int_or_none(event.get("variable_sip_term_status")))


@dataclass(frozen=True, slots=True)
class Admission:
    """What the cluster says of a newly connected socket (cluster mode only).

    A single gateway has no admission step: every socket is a new call.
    """

    #: the replica that held the call before; empty for a new call
    adopted_from: str = ""
    #: why the socket is let go at once (the call goes on in its dialplan); empty to keep it
    refused: str = ""
    created_at: datetime | None = None
    answered_at: datetime | None = None
    answer_reported: bool = False
    #: operations the previous replica left in progress, now failed (reported from here)
    lost_operations: tuple[Operation, ...] = ()


Admit = Callable[[Session], Awaitable[Admission]]


class _Call:
    """What the controller keeps per live socket."""

    __slots__ = (
        "admitting",
        "answer_ops",
        "cause",
        "channel",
        "exiting",
        "hangup_complete",
        "hangup_reported",
        "linger_timer",
        "lingering",
        "session",
    )

    def __init__(self, channel: CallChannel, session: Session) -> None:
        self.channel = channel
        self.session = session
        self.answer_ops: set[str] = set()  # in-progress answer operation ids (= Event-UUIDs)
        self.hangup_reported = False
        self.hangup_complete = False  # CHANNEL_HANGUP_COMPLETE read (reported after admission)
        self.exiting = False
        self.cause: HangupCause | None = None  # from CHANNEL_HANGUP until the complete event
        self.lingering = False  # FreeSWITCH sent the linger notice: the call is over
        self.linger_timer: asyncio.TimerHandle | None = None  # waiting for HANGUP_COMPLETE
        self.admitting = False  # the cluster has not yet said new, adopted or let go


class CallControl:
    """Implements ``LinkHandler``; owns the session registry and the operations."""

    def __init__(
        self, config: GatewayConfig, events: EventStream, metrics: CommandMetrics | None = None
    ) -> None:
        self._config = config
        self._metrics = metrics or CommandMetrics(CollectorRegistry())
        self._events = events
        self.sessions = SessionRegistry()
        limits = config.operations
        self.operations = OperationStore(
            retention_per_app=limits.retention_per_app,
            max_in_progress_per_app=limits.max_in_progress_per_app,
            max_in_progress_per_session=limits.max_in_progress_per_session,
            max_watchers_per_app=limits.max_watchers_per_app,
            on_finished=self._report_result,
        )
        self._calls: dict[str, _Call] = {}
        self._stopping = False
        self._timeout_ms = config.operations.timeout_ms
        self._linger_wait = config.esl.linger_wait_ms / 1000
        #: cluster mode: decides new call, adoption or let-go for each socket
        self.admit: Admit | None = None
        self._admitting: set[asyncio.Task[None]] = set()

    @property
    def channel_fields(self) -> tuple[str, ...]:
        """The connect reply's channel fields `call_connected` reads; the link keeps only these."""
        return (
            "Unique-ID",
            f"variable_{self._config.esl.app_variable}",
            "Caller-Caller-ID-Number",
            "Caller-Destination-Number",
            "Call-Direction",
            "Answer-State",
        )

    # -- commands (from the API) ---------------------------------------------
    def answer(self, app_id: str, session_id: str, command_uid: str) -> Operation:
        op, call = self._begin(app_id, session_id, "answer", command_uid)
        if call is not None:
            call.answer_ops.add(op.operation_id)
            frame = encode_sendmsg(
                [
                    ("call-command", "execute"),
                    ("execute-app-name", "answer"),
                    ("Event-UUID", op.operation_id),
                ]
            )
            # Success comes with CHANNEL_EXECUTE_COMPLETE; the reply only says queued.
            call.channel.send(frame, lambda reply: self._on_queued(call, op, reply))
        return op

    def hangup(self, app_id: str, session_id: str, command_uid: str, cause: str) -> Operation:
        op, call = self._begin(app_id, session_id, "hangup", command_uid)
        if call is not None:
            frame = encode_sendmsg([("call-command", "hangup"), ("hangup-cause", cause or DEFAULT_CAUSE)])
            call.channel.send(frame, lambda reply: self._on_dispatched(op, reply))
        return op

    def disconnect(self, app_id: str, session_id: str, command_uid: str) -> Operation:
        op, call = self._begin(app_id, session_id, "disconnect", command_uid)
        if call is not None:
            # Refuse later commands from now on, before FreeSWITCH even replies.
            call.exiting = True
            self._fail_answers(call, "session_disconnected", "the session was disconnected")
            self.sessions.end(session_id, SessionState.DISCONNECTED)
            call.channel.send(encode_command("exit"), lambda reply: self._on_dispatched(op, reply))
        return op

    def _begin(
        self, app_id: str, session_id: str, command: str, command_uid: str
    ) -> tuple[Operation, _Call | None]:
        """The operation for this command, and the call to act on when it is new."""
        # A repeat is answered from the first operation, whatever the session
        # has become since, and nothing is sent again.
        existing = self.operations.find(app_id, session_id, command_uid, command)
        if existing is not None:
            return existing, None
        session = self.sessions.for_command(app_id, session_id)
        call = self._calls.get(session_id)
        if call is None or call.session is not session:
            raise Unavailable(f"session {session_id} has no live connection")
        if call.admitting:
            # Nothing is sent before call.initiated (or the adoption): an answer's
            # call.answered would overtake it. The cluster answers within its timeout.
            raise Unavailable(f"session {session_id} is being admitted to the cluster; retry")
        op = self.operations.start(
            app_id=app_id,
            session_id=session_id,
            command=command,
            command_uid=command_uid,
            timeout_ms=self._timeout_ms,
        )
        return op, call

    # -- replies ---------------------------------------------------------------
    def _on_queued(self, call: _Call, op: Operation, reply: Reply) -> None:
        if not reply.ok:
            call.answer_ops.discard(op.operation_id)
            self._refused(op, reply)

    def _on_dispatched(self, op: Operation, reply: Reply) -> None:
        if reply.ok:
            self.operations.finish(op.operation_id, Status.SUCCEEDED)
        else:
            self._refused(op, reply)

    def _refused(self, op: Operation, reply: Reply) -> None:
        # A reply frame means FreeSWITCH said no; none means the socket went first.
        reason = "freeswitch_error" if reply.frame is not None else "connection_lost"
        self.operations.finish(op.operation_id, Status.FAILED, reason, reply.text)

    def _report_result(self, op: Operation) -> None:
        self._metrics.finished(op.command, op.status.value, op.reason)
        self._events.publish(
            CommandResult(
                app_id=op.app_id,
                session_id=op.session_id,
                operation_id=op.operation_id,
                command=op.command,
                command_uid=op.command_uid,
                status=op.status.value,
                reason=op.reason,
                message=op.message,
                occurred_at=op.finished_at or datetime.now(UTC),
            )
        )

    # -- the link (LinkHandler) -------------------------------------------------
    def _call_of(self, channel: CallChannel) -> _Call | None:
        """The call this connection owns. A connection speaks only for its own session: one
        refused (a second socket claiming a live call's Unique-ID, an unknown owner) or
        superseded (the old socket of a call the dialplan handed over again) owns none."""
        call = self._calls.get(channel.unique_id)
        return call if call is not None and call.channel is channel else None

    def call_connected(self, channel: CallChannel) -> None:
        data = channel.channel_data
        session_id = channel.unique_id
        if session_id_violation(session_id) is not None or session_id != canonical_uuid(session_id):
            # No API request could ever name it; FreeSWITCH's own Unique-IDs are lowercase UUIDs.
            log.warning("call with Unique-ID %r is not a UUID; returning it to the dialplan", session_id[:64])
            channel.send(encode_command("exit"), lambda reply: None)
            return
        app_id = data.get(f"variable_{self._config.esl.app_variable}", "")
        if not app_id or self._config.application(app_id) is None:
            log.warning(
                "call %s has no known owner (%s=%r); returning it to the dialplan",
                session_id,
                self._config.esl.app_variable,
                app_id,
            )
            channel.send(encode_command("exit"), lambda reply: None)
            return
        session = Session(
            session_id=session_id,
            app_id=app_id,
            caller_number=data.get("Caller-Caller-ID-Number", ""),
            destination_number=data.get("Caller-Destination-Number", ""),
            direction=data.get("Call-Direction", ""),
        )
        if data.get("Answer-State") == "answered":
            session.state = SessionState.ANSWERED
            session.answered_at = datetime.now(UTC)
        if not self.sessions.add(session):
            log.error("call %s is already connected; refusing a second socket", session_id)
            channel.send(encode_command("exit"), lambda reply: None)
            return
        call = self._calls[session_id] = _Call(channel, session)
        if self.admit is not None:
            # Held from now on (events are read), announced once the cluster has answered.
            call.admitting = True
            task = asyncio.get_running_loop().create_task(self._admit(self.admit, call))
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)
            return
        self._announce(session)

    async def _admit(self, admit: Admit, call: _Call) -> None:
        session = call.session
        try:
            admission = await admit(session)
        except Exception as exc:  # an unexpected failure must not leave a call half-held
            log.exception("admission of call %s failed", session.session_id)
            admission = Admission(refused=f"admission failed: {type(exc).__name__}")
        call.admitting = False
        if self._calls.get(session.session_id) is not call:
            return  # the socket closed meanwhile
        if admission.refused:
            log.warning(
                "call %s let go at once (%s); it goes on in its dialplan",
                session.session_id,
                admission.refused,
            )
            del self._calls[session.session_id]
            self.sessions.discard(session.session_id)
            call.exiting = True
            call.channel.send(encode_command("exit"), lambda reply: None)
            return
        if admission.adopted_from:
            # Same session, state kept; the application was told of it already.
            session.created_at = admission.created_at or session.created_at
            session.answered_at = admission.answered_at or session.answered_at
            session.answer_reported = admission.answer_reported
            for op in admission.lost_operations:
                self.operations.restore(op)
            log.info(
                "call %s adopted from replica %s (%s)",
                session.session_id,
                admission.adopted_from,
                session.state,
            )
        else:
            self._announce(session)
        self._admitted(call)

    def _admitted(self, call: _Call) -> None:
        """What the teardown asked while the cluster was being asked, now in order."""
        if call.hangup_complete:
            self._report_hangup(call)
        if call.lingering:
            self._on_linger(call)

    def _announce(self, session: Session) -> None:
        app_id, session_id = session.app_id, session.session_id
        log.info(
            "call %s for %s from %s to %s",
            session_id,
            app_id,
            session.caller_number,
            session.destination_number,
        )
        self._events.publish(
            CallInitiated(
                app_id=app_id,
                session_id=session_id,
                caller_number=session.caller_number,
                destination_number=session.destination_number,
                direction=session.direction,
                occurred_at=session.created_at,
            )
        )

    def call_event(self, channel: CallChannel, event: Event) -> None:
        call = self._call_of(channel)
        if call is None or event.get("Unique-ID", channel.unique_id) != channel.unique_id:
            return
        name = event.name
        if name == "CHANNEL_EXECUTE_COMPLETE":
            self._execute_complete(call, event)
        elif name == "CHANNEL_ANSWER":
            if call.session.answered_at is None:
                call.session.answered_at = datetime.now(UTC)
            if call.session.state is SessionState.RINGING:
                call.session.state = SessionState.ANSWERED
        elif name == "CHANNEL_HANGUP":
            if call.session.state in (SessionState.RINGING, SessionState.ANSWERED):
                call.session.state = SessionState.HANGUP
            call.cause = HangupCause.of(event) or call.cause
            cause = call.cause.name if call.cause is not None else "UNKNOWN"
            self._fail_answers(call, "call_hangup", f"the call hung up ({cause}) before answer completed")
        elif name == "CHANNEL_HANGUP_COMPLETE":
            call.cause = HangupCause.of(event) or call.cause
            call.hangup_complete = True
            if call.admitting:
                return  # reported once admitted: call.initiated goes first (see `_admitted`)
            self._report_hangup(call)
            if call.linger_timer is not None:
                # The linger notice came first; now everything is read.
                self._release(call)

    def _execute_complete(self, call: _Call, event: Event) -> None:
        op_id = event.get("Application-UUID", "")
        if event.get("Application") != "answer" or op_id not in call.answer_ops:
            return
        call.answer_ops.discard(op_id)
        session = call.session
        if session.answered_at is None:
            session.answered_at = datetime.now(UTC)
        if session.state is SessionState.RINGING:
            session.state = SessionState.ANSWERED
        if not session.answer_reported:
            session.answer_reported = True
            self._events.publish(CallAnswered(app_id=session.app_id, session_id=session.session_id))
        op = self.operations.finish(op_id, Status.SUCCEEDED)
        if op is not None and op.finished_at is not None:
            self._metrics.answer_confirmed((op.finished_at - op.created_at).total_seconds())

    def call_notice(self, channel: CallChannel, notice: Frame) -> None:
        call = self._call_of(channel)
        if call is None or notice.headers.get("Content-Disposition") != "linger":
            # A disconnect notice needs nothing: the close follows it.
            return
        call.lingering = True
        if call.admitting:
            return  # acted on once admitted (see `_admitted`)
        self._on_linger(call)

    def _on_linger(self, call: _Call) -> None:
        if call.exiting or call.linger_timer is not None:
            return
        if call.hangup_reported:
            self._release(call)
            return
        # The notice overtook CHANNEL_HANGUP_COMPLETE (it does under load and
        # on shutdown). With plain linger FreeSWITCH keeps the channel until we
        # leave, so waiting a bounded time for the rest costs nothing.
        log.debug("call %s: linger notice before CHANNEL_HANGUP_COMPLETE; waiting", call.session.session_id)
        call.linger_timer = asyncio.get_running_loop().call_later(
            self._linger_wait, self._linger_wait_over, call
        )

    def _linger_wait_over(self, call: _Call) -> None:
        call.linger_timer = None
        if self._calls.get(call.session.session_id) is not call or call.exiting:
            return
        log.warning(
            "call %s: no CHANNEL_HANGUP_COMPLETE within %d ms of the linger notice; releasing it",
            call.session.session_id,
            self._config.esl.linger_wait_ms,
        )
        # Reported when the socket closes, so a complete event that still
        # comes before FreeSWITCH's `+OK bye` is read first.
        self._release(call)

    def _release(self, call: _Call) -> None:
        """Let a finished call go: ``exit`` ends FreeSWITCH's linger."""
        if call.linger_timer is not None:
            call.linger_timer.cancel()
            call.linger_timer = None
        if not call.exiting:
            call.exiting = True
            call.channel.send(encode_command("exit"), lambda reply: None)

    def call_closed(self, channel: CallChannel, reason: str) -> None:
        call = self._call_of(channel)
        if call is None:
            return
        del self._calls[channel.unique_id]
        if call.admitting:
            # Never announced: nothing to report.
            self.sessions.discard(call.session.session_id)
            return
        if call.linger_timer is not None:
            call.linger_timer.cancel()
            call.linger_timer = None
        if not call.hangup_reported and (call.cause is not None or call.lingering):
            # FreeSWITCH said the call is over before the socket went: that is
            # a hangup, whoever closed, with the cause it gave if it gave one.
            if call.cause is None:
                log.warning("call %s ended without a hangup event: %s", channel.unique_id, reason)
            self._report_hangup(call, "" if call.cause is not None else CAUSE_NOT_GIVEN)
            return
        if self._stopping and not call.hangup_reported:
            # Closing the socket hands the call back to its dialplan (04b): it
            # is not hung up, so no call.hangup; it just leaves our control.
            log.info("call %s returned to the dialplan: gateway stopping", channel.unique_id)
            self._fail_answers(
                call, "gateway_shutdown", "the gateway stopped; the call went back to the dialplan"
            )
            self.sessions.end(call.session.session_id, SessionState.DISCONNECTED)
            return
        if not call.exiting and not call.hangup_reported:
            log.warning("call %s lost its socket: %s", channel.unique_id, reason)
        self._fail_answers(call, "connection_lost", f"the Event Socket connection closed: {reason}")
        if not call.hangup_reported and call.session.state is not SessionState.DISCONNECTED:
            call.hangup_reported = True
            self._events.publish(
                CallHangup(
                    app_id=call.session.app_id,
                    session_id=call.session.session_id,
                    cause="UNKNOWN",
                    reason=CONNECTION_LOST,
                )
            )
        if call.session.state is not SessionState.DISCONNECTED:
            self.sessions.end(call.session.session_id, SessionState.HANGUP)

    def _report_hangup(self, call: _Call, reason: str = "") -> None:
        """Publish call.hangup once, with the best cause FreeSWITCH gave.

        ``reason`` says why the cause is not known; empty when it is.
        """
        if call.hangup_reported:
            return
        call.hangup_reported = True
        call.session.state = SessionState.HANGUP
        self._fail_answers(call, "call_hangup", "the call hung up before answer completed")
        cause = call.cause
        if cause is None and not reason:
            reason = CAUSE_NOT_GIVEN
        self._events.publish(
            CallHangup(
                app_id=call.session.app_id,
                session_id=call.session.session_id,
                cause=cause.name if cause is not None else "UNKNOWN",
                q850_code=cause.q850_code if cause is not None else None,
                sip_code=cause.sip_code if cause is not None else None,
                reason=reason,
            )
        )
        self.sessions.end(call.session.session_id, SessionState.HANGUP)

    def _fail_answers(self, call: _Call, reason: str, message: str) -> None:
        for op_id in list(call.answer_ops):
            call.answer_ops.discard(op_id)
            self.operations.finish(op_id, Status.FAILED, reason, message)

    def begin_shutdown(self) -> None:
        """From now on a closing socket means the gateway let the call go."""
        self._stopping = True

    def shutdown(self) -> None:
        for task in self._admitting:
            task.cancel()
        for call in self._calls.values():
            if call.linger_timer is not None:
                call.linger_timer.cancel()
                call.linger_timer = None
        self.operations.shutdown()


def _int_or_none(value: str | None) -> int | None:
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
    if value is None or not _CODE.fullmatch(value.strip()):
        return None
    return int(value)
