"""One simulated call: a channel plus the outbound Event Socket FreeSWITCH opened for it.

It plays FreeSWITCH's side of ``socket <gateway> async full`` the way
``mod_event_socket.c`` (1.10.12) and the captured transcripts show it:

* nothing is sent until the client sends ``connect``; the reply is one URL-encoded
  header block (channel data + ``Reply-Text: %2BOK%0A``);
* commands are matched like ``parse_command`` does (case-insensitive prefixes, in
  its order) and answered with a ``command/reply``;
* ``sendmsg`` is answered ``+OK`` when queued; the channel then runs the messages
  one after another (a per-call worker), emitting the events ``myevents`` asked for;
* when the channel hangs up, the socket gets CHANNEL_HANGUP, CHANNEL_UNPARK,
  CHANNEL_EXECUTE_COMPLETE (socket), CHANNEL_STATE x2, CHANNEL_HANGUP_COMPLETE, then a
  linger notice (socket stays open) or a disconnect notice and the close. The
  ``hangup_order`` changes that the way the real switch does under load and on
  shutdown (``HANGUP_ORDERS``);
* ``exit`` or a TCP close while the channel is alive hands the call back to the
  dialplan (``playback`` then ``hangup NORMAL_CLEARING`` in the captured dialplan);
  with ``next_sockets`` the dialplan's next action is another ``socket`` (the
  cluster's dialplan in DESIGN.md): the same channel connects there, and only
  after the last one goes on to ``playback``.

Call states (a table; ``destroyed`` is terminal): ringing → answered → hangup
(lingering) → destroyed, and ringing/answered → dialplan → destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid as uuid_module
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, Final, Literal, Protocol

from callcontrol.causes import NORMAL_CLEARING, Q850_CAUSES, cause_name, q850_code, resolve_cause
from callcontrol.esl.frames import (
    Command,
    CommandParser,
    FrameError,
    encode_api_response,
    encode_connect_reply,
    encode_disconnect_notice,
    encode_event_plain,
    encode_reply,
)
from callcontrol.simulator.channel import Channel, SwitchIdentity, hangup_variables, sip_channel

log = logging.getLogger(__name__)

CallState = Literal["ringing", "answered", "hangup", "dialplan", "destroyed"]

TRANSITIONS: Final[Mapping[CallState, frozenset[CallState]]] = {
    "ringing": frozenset({"answered", "hangup", "dialplan", "destroyed"}),
    "answered": frozenset({"hangup", "dialplan", "destroyed"}),
    "hangup": frozenset({"destroyed"}),
    "dialplan": frozenset({"destroyed"}),
    "destroyed": frozenset(),
}
_ALIVE: Final[frozenset[CallState]] = frozenset({"ringing", "answered", "dialplan"})

GOODBYE: Final = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
SHUTTING_DOWN: Final = b"The system is being shut down.\n"
VERSION: Final = "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"
# The captured dialplan after `socket`: playback silence_stream://2000, hangup NORMAL_CLEARING.
DIALPLAN_AFTER_SOCKET: Final = (("playback", "silence_stream://2000"), ("hangup", NORMAL_CLEARING))
# Applications the simulated channel can run; anything else is "Invalid Application".
KNOWN_APPS: Final = frozenset(
    {
        "answer",
        "pre_answer",
        "ring_ready",
        "hangup",
        "set",
        "unset",
        "export",
        "log",
        "info",
        "playback",
        "sleep",
    }
)

Initiator = Literal["caller", "switch", "shutdown"]

HangupOrder = Literal["complete_first", "notice_first", "close_after_hangup"]
#: What the socket gets after CHANNEL_HANGUP, as seen from a real FreeSWITCH 1.10.12
#: (shared/notes/freeswitch-under-load.md):
HANGUP_ORDERS: Final[Mapping[HangupOrder, str]] = {
    # the usual order: the whole teardown, CHANNEL_HANGUP_COMPLETE, then the notice
    "complete_first": "teardown events, then the linger notice (or disconnect notice + close)",
    # under load (1-2 % of calls) and on `fsctl shutdown`: the notice first, the rest of
    # the teardown `teardown_delay` later, unless the client leaves (exit/close) before
    "notice_first": "the linger notice (or disconnect notice + close), then the teardown events",
    # the switch goes away mid-teardown: the connection closes with no notice
    "close_after_hangup": "the connection closes, nothing else",
}
#: How long after an early notice the rest of the teardown comes (measured on shutdown).
TEARDOWN_DELAY: Final = 0.02


class SwitchContext(Protocol):
    """What a call needs from the simulated switch."""

    identity: SwitchIdentity
    dialplan_playback: float

    def next_sequence(self) -> int: ...

    def session_id(self) -> int: ...

    def find_call(self, uuid: str) -> SimulatedCall | None: ...


def _now() -> float:
    return time.time()


class SimulatedCall:
    """One call FreeSWITCH handed to the gateway's outbound socket listener."""

    def __init__(
        self,
        switch: SwitchContext,
        gateway: tuple[str, int],
        *,
        uuid: str | None = None,
        app_id: str | None = "demo-app",
        caller_number: str = "1000",
        caller_name: str | None = None,
        destination_number: str = "8084",
        answer_delay: float = 0.02,
        answer_completes: bool = True,
        error_replies: Mapping[str, str] | None = None,
        unanswered: Collection[str] = (),
        hangup_order: HangupOrder | None = None,
        teardown_delay: float = TEARDOWN_DELAY,
        next_sockets: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.uuid = uuid or str(uuid_module.uuid4())
        #: Where each socket of this call connected, in order.
        self.connections: list[tuple[str, int]] = []
        self._next_sockets = list(next_sockets)
        self._connected = asyncio.Event()  # set (and replaced) on every new connection
        #: The order of what follows CHANNEL_HANGUP (HANGUP_ORDERS); None: FreeSWITCH's
        #: usual, which is "complete_first", and "notice_first" on shutdown (as in capture 06).
        self.hangup_order: HangupOrder | None = hangup_order
        #: With "notice_first": seconds between the notice and the rest of the teardown.
        self.teardown_delay = teardown_delay
        self.app_id = app_id
        self.commands: list[Command] = []
        #: What reached the socket after the connect reply, in order: event names and
        #: the notices ("linger", "disconnect"); replies are not listed.
        self.sent: list[str] = []
        self.state: CallState = "ringing"
        self.hangup_cause: str | None = None
        self.socket_error: OSError | None = None
        #: Set when the call goes back to its dialplan (``exit``, or the gateway closed TCP).
        self.returned_to_dialplan = asyncio.Event()
        self.answered = asyncio.Event()
        self.hung_up = asyncio.Event()

        self._switch = switch
        self._gateway = gateway
        self._answer_delay = answer_delay
        self._answer_completes = answer_completes
        self._error_replies = {k.lower(): v for k, v in (error_replies or {}).items()}
        # Commands that get no reply at all: a wedged FreeSWITCH (greenswitch issue #34).
        self._unanswered = {verb.lower() for verb in unanswered}
        self._channel: Channel = sip_channel(
            uuid=self.uuid,
            session_id=switch.session_id(),
            caller_number=caller_number,
            caller_name=caller_name or caller_number,
            destination_number=destination_number,
            app_id=app_id,
            socket_address=gateway,
            now=_now(),
        )
        self._socket_app_uuid = str(uuid_module.uuid4())
        self._parser = CommandParser()
        self._writer: asyncio.StreamWriter | None = None
        self._socket_open = False
        self._closed = asyncio.Event()
        self._transition = asyncio.Event()  # set (and replaced) on every state change
        self._events_on = False
        self._myevents = False
        self._park_sent = False
        self._linger: int | None = None  # None: no linger; -1: no timeout; else seconds
        self._linger_timer: asyncio.TimerHandle | None = None
        self._teardown: asyncio.TimerHandle | None = None  # the teardown after an early notice
        self._hangup_code = 0  # the cause being torn down with
        self._socket_app_running = False  # whether `socket` was still running at the hangup
        self._messages: asyncio.Queue[Command | None] = asyncio.Queue()  # None: the channel is gone
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[tuple[Callable[[Command], bool], asyncio.Future[Command]]] = []

    def __repr__(self) -> str:
        return f"<SimulatedCall {self.uuid} {self.state}>"

    # -- public API ------------------------------------------------------------------------------

    @property
    def channel_name(self) -> str:
        return self._channel.name

    @property
    def variables(self) -> Mapping[str, str]:
        """The channel variables (``getvar`` answers from these)."""
        return dict(self._channel.variables)

    @property
    def socket_open(self) -> bool:
        return self._socket_open

    async def caller_hangup(self, cause: str = NORMAL_CLEARING) -> None:
        """The caller hangs up first (a SIP BYE, or CANCEL before answer)."""
        self._hangup(cause, initiator="caller")
        await self._drain()

    async def drop_socket(self) -> None:
        """The socket dies with no notice (FreeSWITCH crashed, or the network went away)."""
        if self._writer is not None and self._socket_open:
            self._socket_open = False
            self._writer.transport.abort()
            self._closed.set()
        log.info("call %s: socket dropped without notice", self.uuid)
        self._stop_work()
        self._enter("destroyed")

    # The timeout parameters are the test-facing API: each wait has its own deadline.
    async def wait_for_command(
        self,
        predicate: Callable[[Command], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Command:
        """The first command (already received or still to come) that matches."""
        for command in self.commands:
            if predicate(command):
                return command
        future: asyncio.Future[Command] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def wait_closed(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until the socket is closed (by either side)."""
        await asyncio.wait_for(self._closed.wait(), timeout)

    async def wait_state(self, state: CallState, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until the call reaches ``state`` (checks on every transition, no polling)."""

        async def reached() -> None:
            while self.state != state:
                if self.state == "destroyed":
                    raise RuntimeError(f"call {self.uuid} was destroyed before reaching {state}")
                await self._transition.wait()

        await asyncio.wait_for(reached(), timeout)

    # -- lifecycle (driven by FreeSwitchSimulator) -----------------------------------------------

    async def wait_connections(self, count: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until ``count`` sockets of this call have connected (checks on every connect)."""

        async def reached() -> None:
            while len(self.connections) < count:
                await self._connected.wait()

        await asyncio.wait_for(reached(), timeout)

    async def start(self) -> None:
        """Connect to the gateway like the ``socket`` application does; on failure the dialplan goes on."""
        self._spawn(self._run_messages())
        await self._connect(self._gateway)

    async def _connect(self, address: tuple[str, int]) -> None:
        host, port = address
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self.socket_error = exc
            log.warning("call %s: Socket Error: %s; the dialplan goes on", self.uuid, exc)
            self._closed.set()
            self._socket_ended()
            return
        self._writer = writer
        self._socket_open = True
        log.info("call %s: connected to %s:%s from %s", self.uuid, host, port, self._channel.name)
        self.connections.append(address)
        self._connected.set()
        self._connected = asyncio.Event()
        self._spawn(self._read_loop(reader, writer))

    async def _next_socket(self, address: tuple[str, int]) -> None:
        """The dialplan's next ``socket``: a fresh connection, the same channel."""
        self._parser = CommandParser()
        self._writer = None
        self._closed = asyncio.Event()
        self._events_on = self._myevents = self._park_sent = False
        self._linger = None
        self._socket_app_uuid = str(uuid_module.uuid4())
        log.info("call %s: next socket action: %s:%s", self.uuid, *address)
        await self._connect(address)

    def shutdown_hangup(self) -> None:
        """``fsctl shutdown``, first step: the channel hangs up SYSTEM_SHUTDOWN."""
        self._hangup("SYSTEM_SHUTDOWN", initiator="shutdown")

    def shutdown_close(self) -> None:
        """``fsctl shutdown``, last step: every socket gets the shutdown notice and is closed."""
        if self._teardown is not None:
            # FreeSWITCH finishes the teardown long before its last step.
            self._teardown.cancel()
            self._teardown = None
            self._finish_teardown()
        if self._socket_open:
            self._send_disconnect(SHUTTING_DOWN)
            self._close_socket()
        if self.state in _ALIVE:
            self._hangup("SYSTEM_SHUTDOWN", initiator="shutdown")
        self._enter("destroyed")

    async def abort(self) -> None:
        """Stop everything now (simulator close): no notices, no events."""
        if self._writer is not None and self._socket_open:
            self._socket_open = False
            self._writer.transport.abort()
        self._closed.set()
        self._stop_work()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- state -----------------------------------------------------------------------------------

    def _enter(self, state: CallState) -> None:
        if state == self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"call {self.uuid}: no transition {self.state} -> {state}")
        log.info("call %s: %s -> %s", self.uuid, self.state, state)
        self.state = state
        self._transition.set()
        self._transition = asyncio.Event()
        if state == "destroyed":
            self._messages.put_nowait(None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stop_work(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._teardown is not None:
            self._teardown.cancel()
            self._teardown = None
        for _, future in self._waiters:
            if not future.done():
                future.cancel()

    # -- the socket ------------------------------------------------------------------------------

    def _writable(self) -> bool:
        return self._writer is not None and self._socket_open and not self._writer.is_closing()

    def _send(self, data: bytes) -> None:
        if self._writer is not None and self._writable():
            self._writer.write(data)

    def _reply(self, text: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self._send(encode_reply(text, extra))

    async def _drain(self) -> None:
        if self._writer is not None and self._socket_open:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def _close_socket(self) -> None:
        if self._writer is not None and self._socket_open:
            self._socket_open = False
            self._writer.close()
        self._closed.set()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Bound to its own connection: after a next ``socket`` the old one must not touch the new.
        try:
            while self._socket_open and writer is self._writer:
                data = await reader.read(65536)
                if not data or writer is not self._writer:
                    break
                self._parser.feed(data)
                while (
                    self._socket_open
                    and writer is self._writer
                    and (command := self._parser.next_command()) is not None
                ):
                    self._received(command)
                    self._dispatch(command)
                await self._drain()
        except FrameError as exc:
            log.warning("call %s: unreadable command from the gateway: %s", self.uuid, exc)
        except ConnectionError as exc:
            log.info("call %s: connection error: %s", self.uuid, exc)
        finally:
            if writer is self._writer:
                self._gateway_closed()

    def _gateway_closed(self) -> None:
        """The gateway closed TCP (or it broke): like the socket app ending without ``exit``."""
        if not self._socket_open:
            return
        log.info("call %s: the gateway closed the socket", self.uuid)
        self._close_socket()
        self._socket_ended()

    def _socket_ended(self) -> None:
        """The socket application is over: a live channel goes on in the dialplan, a dead one is freed."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self.state in ("ringing", "answered"):
            if self._next_sockets:
                self._spawn(self._next_socket(self._next_sockets.pop(0)))
            else:
                self._return_to_dialplan()
        elif self._teardown is not None:
            # The client left after an early notice: the teardown goes on, unseen.
            self._teardown.cancel()
            self._teardown = None
            self._finish_teardown()
        elif self.state == "hangup":
            self._enter("destroyed")

    def _received(self, command: Command) -> None:
        log.info("call %s: <- %s", self.uuid, command.line)
        self.commands.append(command)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(command):
                future.set_result(command)

    # -- commands (mod_event_socket.c parse_command, outbound + full) ----------------------------

    def _dispatch(self, command: Command) -> None:
        cmd = command.line.lower()
        if command.verb in self._unanswered:
            return
        override = self._error_replies.get(command.verb)
        if override is not None:
            self._reply(override)
            return
        if cmd.startswith(("exit", "...")):
            self._exit()
        elif cmd.startswith("resume"):
            self._reply("+OK")
        elif cmd.startswith("connect"):
            sequence = self._switch.next_sequence()
            channel_data = self._channel.channel_data(self._switch.identity, sequence, now=_now())
            self._send(encode_connect_reply(channel_data))
        elif cmd.startswith("getvar"):
            _, _, name = command.line.partition(" ")
            self._reply(self._channel.variables.get(name.strip(), "") if name else "")
        elif cmd.startswith("myevents"):
            self._enable_myevents()
        elif cmd.startswith("sendmsg"):
            self._sendmsg(command)
        elif cmd.startswith("api "):
            self._api(command.line[4:].strip())
        elif cmd.startswith("bgapi "):
            job = command.headers.get("Job-UUID") or str(uuid_module.uuid4())
            # The result would come as BACKGROUND_JOB, which myevents does not subscribe to.
            self._reply(f"+OK Job-UUID: {job}", (("Job-UUID", job),))
        elif cmd.startswith("linger"):
            self._set_linger(command.line)
        elif cmd.startswith("nolinger"):
            self._linger = None
            self._reply("+OK will not linger")
        elif cmd.startswith("noevents"):
            self._events_on = self._myevents = False
            self._reply("+OK no longer listening for events")
        elif cmd.startswith("event"):
            parts = command.line.split()
            kind = parts[1].lower() if len(parts) > 1 else "plain"
            self._events_on = True
            self._reply(f"+OK event listener enabled {kind}")
            self._schedule_park()
        else:
            self._reply("-ERR command not found")

    def _enable_myevents(self) -> None:
        if self._myevents:
            self._reply("-ERR aready enabled.")  # sic, as FreeSWITCH spells it
            return
        self._myevents = self._events_on = True
        self._reply("+OK Events Enabled")
        self._schedule_park()

    def _schedule_park(self) -> None:
        # The socket app parks the channel once connected; CHANNEL_PARK reaches the
        # socket after the replies to what the gateway already sent (as captured).
        if not self._park_sent:
            self._park_sent = True
            asyncio.get_running_loop().call_soon(self._emit_park)

    def _emit_park(self) -> None:
        if self.state in ("ringing", "answered"):
            self._emit("CHANNEL_PARK")

    def _set_linger(self, line: str) -> None:
        # FreeSWITCH: "linger N" → atoi(N) seconds; "linger" alone → -1 (no timeout).
        rest = line[6:]
        if rest.startswith(" ") and rest[1:]:
            digits = ""
            for char in rest[1:].lstrip():
                if not char.isdigit():
                    break
                digits += char
            self._linger = int(digits) if digits else 0
            self._reply(f"+OK will linger {self._linger} seconds")
        else:
            self._linger = -1
            self._reply("+OK will linger")

    def _exit(self) -> None:
        self._reply("+OK bye")
        self._send_disconnect(GOODBYE)
        self._close_socket()
        self._socket_ended()

    def _sendmsg(self, command: Command) -> None:
        target = command.argument or command.headers.get("session-id") or ""
        if target and target != self.uuid:
            other = self._switch.find_call(target)
            if other is None or other.state == "destroyed":
                self._reply(f"-ERR invalid session id [{target}]")
                return
            self._reply("+OK")
            other.queue_message(command)
            return
        self._reply("+OK")
        self.queue_message(command)

    def queue_message(self, command: Command) -> None:
        """Queue a sendmsg for the channel; a channel that has hung up ignores it (still ``+OK``)."""
        if self.state in ("ringing", "answered"):
            self._messages.put_nowait(command)
        else:
            log.info("call %s: %s ignored, the channel is %s", self.uuid, command.line, self.state)

    def _api(self, text: str) -> None:
        name, _, args = text.partition(" ")
        argv = args.split()
        target = self._switch.find_call(argv[0]) if argv else None
        live = target is not None and target.state in ("ringing", "answered")
        if name == "uuid_getvar" and len(argv) >= 2:
            value = target.variables.get(argv[1]) if target is not None else None
            body = "-ERR No such channel!\n" if target is None else (value or "_undef_")
        elif name == "uuid_exists":
            body = "true" if live else "false"
        elif name == "uuid_kill" and argv:
            if target is not None and live:
                target._hangup(argv[1] if len(argv) > 1 else None, initiator="switch")
                body = "+OK\n"
            else:
                body = "-ERR No such channel!\n"
        elif name == "uuid_kill":
            body = "-USAGE: <uuid> [cause]\n"
        elif name == "version":
            body = VERSION
        else:
            body = f"-ERR {name} Command not found!\n"
        self._send(encode_api_response(body.encode()))

    # -- the channel -----------------------------------------------------------------------------

    def _emit(
        self,
        name: str,
        *,
        variables: bool = True,
        leading: tuple[tuple[str, str], ...] = (),
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Fire an event; it reaches the socket only if the gateway subscribed (myevents)."""
        sequence = self._switch.next_sequence()
        if not (self._events_on and self._socket_open):
            return
        headers = self._channel.event_headers(
            self._switch.identity,
            sequence,
            name,
            now=_now(),
            variables=variables,
            leading=leading,
            extra=extra,
        )
        if self._writable():
            self.sent.append(name)
        self._send(encode_event_plain(headers))

    async def _run_messages(self) -> None:
        """The session thread: queued sendmsg messages run one after another."""
        while (command := await self._messages.get()) is not None:
            if self.state not in ("ringing", "answered"):
                continue
            call_command = (command.headers.get("call-command") or "").lower()
            if call_command == "execute":
                await self._execute(command)
            elif call_command == "hangup":
                self._hangup(command.headers.get("hangup-cause"), initiator="switch")
            else:
                log.info("call %s: call-command %r does nothing", self.uuid, call_command)
            await self._drain()

    async def _execute(self, command: Command) -> None:
        app = command.headers.get("execute-app-name", "")
        arg = command.headers.get("execute-app-arg", "")
        if not arg and (command.headers.get("content-type") or "").lower() == "text/plain":
            arg = command.body.decode("utf-8", "replace")
        app_uuid = command.headers.get("Event-UUID") or str(uuid_module.uuid4())
        channel = self._channel
        if app.lower() not in KNOWN_APPS:
            log.info("call %s: Invalid Application %s", self.uuid, app)
            channel.set_variable("app_uuid", app_uuid)
            self._hangup(cause_name(Q850_CAUSES["DESTINATION_OUT_OF_ORDER"]), initiator="switch")
            return
        app = app.lower()
        if app == "answer" and self._answer_delay > 0:
            await asyncio.sleep(self._answer_delay)
            if self.state not in ("ringing", "answered"):
                return
        if "current_loop" not in channel.variables:
            channel.set_variable("current_loop", "1")
            channel.set_variable("total_loops", "1")
        channel.set_variable("current_application", app)
        if arg:
            channel.set_variable("current_application_data", arg)
        else:
            channel.unset_variable("current_application_data")
        head = (("Application", app), *((("Application-Data", arg),) if arg else ()))
        self._emit("CHANNEL_EXECUTE", extra=(*head, ("Application-UUID", app_uuid)))
        done = (*head, ("Application-Response", "_none_"), ("Application-UUID", app_uuid))
        if app == "answer":
            if not self._answer_completes:
                log.info("call %s: answer %s never completes", self.uuid, app_uuid)
                return
            self._mark_answered()
        elif app == "hangup":
            self._hangup(arg or None, initiator="switch", completing=done)
            return
        elif app in ("set", "export"):
            name, _, value = arg.partition("=")
            if name:
                channel.set_variable(name, value)
        elif app == "unset":
            channel.unset_variable(arg)
        self._emit("CHANNEL_EXECUTE_COMPLETE", extra=done)

    def _mark_answered(self) -> None:
        channel = self._channel
        if channel.answer_state == "answered":
            return
        channel.answered = _now()
        channel.answer_state = "answered"
        channel.set_variable("endpoint_disposition", "ANSWER")
        self._emit("CHANNEL_ANSWER")
        channel.call_state = "ACTIVE"
        self._switch.next_sequence()  # CHANNEL_CALLSTATE: fired, but not in the myevents list
        self._enter("answered")
        self.answered.set()

    def _hangup(
        self,
        cause: str | None,
        *,
        initiator: Initiator,
        completing: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        """Hang the channel up and emit what the socket sees, in FreeSWITCH's order."""
        if self.state not in _ALIVE:
            return
        channel = self._channel
        code = resolve_cause(cause)
        name = cause_name(code)
        answered = channel.answer_state == "answered"
        channel.hangup_cause = name
        channel.answer_state = "hangup"
        channel.state_number = 10
        self.hangup_cause = name
        log.info("call %s: hangup %s (%s, asked %r)", self.uuid, name, initiator, cause)
        if initiator == "caller":
            status = "200" if answered else "487"
            channel.set_variable("sip_term_status", status)
            channel.set_variable("proto_specific_hangup_cause", f"sip:{status}")
            channel.set_variable("sip_term_cause", str(q850_code(code)))
        socket_app_running = self._socket_open
        if socket_app_running:
            self._enter("hangup")
        self._emit("CHANNEL_HANGUP")
        # Set once the BYE/CANCEL is handled: not yet on CHANNEL_HANGUP (capture 05).
        if initiator == "caller":
            channel.set_variable("sip_hangup_disposition", "recv_bye" if answered else "recv_cancel")
        else:
            channel.set_variable("sip_hangup_disposition", "send_bye" if answered else "send_refuse")
        if completing is not None:
            self._emit("CHANNEL_EXECUTE_COMPLETE", extra=completing)
        usual: HangupOrder = (
            "notice_first" if initiator == "shutdown" and self._linger is not None else "complete_first"
        )
        order = self.hangup_order or usual
        self._hangup_code = code
        self._socket_app_running = socket_app_running
        if socket_app_running and order == "close_after_hangup":
            log.info("call %s: the connection closes right after CHANNEL_HANGUP", self.uuid)
            self._close_socket()
        elif socket_app_running and order == "notice_first":
            self._send_notice()
            self._teardown = asyncio.get_running_loop().call_later(self.teardown_delay, self._teardown_due)
            return
        self._teardown_events()
        if socket_app_running and order == "complete_first":
            self._send_notice()
        self._after_teardown()

    def _teardown_due(self) -> None:
        self._teardown = None
        self._finish_teardown()

    def _finish_teardown(self) -> None:
        self._teardown_events()
        self._after_teardown()

    def _teardown_events(self) -> None:
        """From CHANNEL_UNPARK to CHANNEL_HANGUP_COMPLETE; a closed socket gets none of it."""
        channel = self._channel
        code = self._hangup_code
        name = cause_name(code)
        if self._socket_app_running:
            self._emit("CHANNEL_UNPARK")
            socket_data = f"{self._gateway[0]}:{self._gateway[1]} async full"
            self._emit(
                "CHANNEL_EXECUTE_COMPLETE",
                extra=(
                    ("Application", "socket"),
                    ("Application-Data", socket_data),
                    ("Application-Response", "_none_"),
                    ("Application-UUID", self._socket_app_uuid),
                ),
            )
        channel.running_state = "CS_HANGUP"
        self._emit("CHANNEL_STATE", variables=False)
        channel.hungup = _now()
        last_app = channel.variables.get("current_application", "socket")
        for var, value in hangup_variables(channel, cause=name, q850=q850_code(code), last_app=last_app):
            channel.set_variable(var, value)
        channel.running_state = "CS_REPORTING"
        channel.state_number = 11
        channel.call_state = "HANGUP"
        self._emit("CHANNEL_STATE", variables=False)
        self._emit("CHANNEL_HANGUP_COMPLETE", leading=(("Hangup-Cause", name),))
        self.hung_up.set()

    def _send_notice(self) -> None:
        """The notice that the call is over: linger (socket kept) or disconnect and the close."""
        if self._linger is not None:
            self._send_linger_notice()
        else:
            self._send_disconnect(GOODBYE)
            self._close_socket()

    def _after_teardown(self) -> None:
        """The channel waits for a lingering socket to end; otherwise it is gone."""
        if self._socket_open and self._linger is not None:
            if self._linger >= 0 and self._linger_timer is None:
                self._linger_timer = asyncio.get_running_loop().call_later(self._linger, self._linger_expired)
        else:
            self._enter("destroyed")

    def _send_linger_notice(self) -> None:
        if self._writable():
            self.sent.append("linger")
        self._send(
            encode_disconnect_notice(self.uuid, "linger", self._linger, channel_name=self._channel.name)
        )

    def _send_disconnect(self, body: bytes) -> None:
        if self._writable():
            self.sent.append("disconnect")
        self._send(encode_disconnect_notice(self.uuid, "disconnect", None, body))

    def _linger_expired(self) -> None:
        self._linger_timer = None
        if self._socket_open:
            log.info("call %s: linger timeout, closing socket", self.uuid)
            self._send_disconnect(GOODBYE)
            self._close_socket()
        if self.state == "hangup":
            self._enter("destroyed")

    def _return_to_dialplan(self) -> None:
        self._enter("dialplan")
        self.returned_to_dialplan.set()
        steps = ", ".join(f"{app} {data}" for app, data in DIALPLAN_AFTER_SOCKET)
        log.info("call %s: back in the dialplan: %s", self.uuid, steps)
        self._spawn(self._finish_dialplan())

    async def _finish_dialplan(self) -> None:
        await asyncio.sleep(self._switch.dialplan_playback)
        if self.state == "dialplan":
            self._hangup(DIALPLAN_AFTER_SOCKET[-1][1], initiator="switch")
