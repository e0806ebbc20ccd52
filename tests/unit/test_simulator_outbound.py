"""The FreeSWITCH simulator against a raw gateway: exact bytes and event order as captured.

The test plays the gateway with nothing but asyncio.start_server and
callcontrol.esl.frames, so what is checked is the simulator's wire behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from callcontrol.esl.frames import (
    Event,
    Frame,
    FrameParser,
    Headers,
    encode_command,
    encode_disconnect_notice,
    encode_sendmsg,
)
from callcontrol.simulator import FreeSwitchSimulator, SimulatedCall
from callcontrol.simulator.__main__ import _parser, run
from tests.transcripts import Transcript, load

GOODBYE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
SHUTDOWN = b"The system is being shut down.\n"
HANGUP_SEQUENCE = [
    "CHANNEL_HANGUP",
    "CHANNEL_UNPARK",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_STATE",
    "CHANNEL_STATE",
    "CHANNEL_HANGUP_COMPLETE",
]


def answer(tag: str) -> bytes:
    """The gateway's answer command, tagged like an operation."""
    return encode_sendmsg([("call-command", "execute"), ("execute-app-name", "answer"), ("Event-UUID", tag)])


def hangup(cause: str) -> bytes:
    """The gateway's hangup command."""
    return encode_sendmsg([("call-command", "hangup"), ("hangup-cause", cause)])


class GatewaySide:
    """The gateway's end of one outbound socket, driven by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser()
        self.received = bytearray()
        self.consumed = 0

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def raw_frame(self, within: float = 5.0) -> tuple[Frame, bytes]:
        """The next frame and the exact bytes it came in."""
        async with asyncio.timeout(within):
            while (frame := self.parser.next_frame()) is None:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("the simulator closed the socket")
                self.received += data
                self.parser.feed(data)
        end = len(self.received) - self.parser.buffered
        raw = bytes(self.received[self.consumed : end])
        self.consumed = end
        return frame, raw

    async def frame(self, within: float = 5.0) -> Frame:
        return (await self.raw_frame(within))[0]

    async def command(self, line: str) -> Frame:
        self.send(encode_command(line))
        return await self.frame()

    async def raw_reply(self, data: bytes) -> bytes:
        self.send(data)
        return (await self.raw_frame())[1]

    async def events(self, count: int) -> list[Event]:
        out: list[Event] = []
        while len(out) < count:
            frame = await self.frame()
            assert frame.event is not None, f"expected an event, got {dict(frame.headers)}"
            out.append(frame.event)
        return out

    async def handshake(self, *, linger: str | None = "linger") -> Frame:
        """connect, myevents (and linger) like the gateway; returns the connect reply, eats CHANNEL_PARK."""
        connect = await self.command("connect")
        assert connect.reply_text == "+OK\n"
        assert (await self.command("myevents")).reply_text == "+OK Events Enabled"
        park = await self.frame()
        assert park.event is not None
        assert park.event.name == "CHANNEL_PARK"
        if linger is not None:
            assert (await self.command(linger)).is_ok
        return connect

    async def eof(self, within: float = 5.0) -> None:
        """The simulator closed the socket and sent nothing more."""
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionResetError):
                rest = await self.reader.read()
                assert rest == b"", rest[:200]
        assert self.parser.buffered == 0

    def close(self) -> None:
        self.writer.close()


class RawGateway:
    """A listener standing in for the gateway's outbound ESL port."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[GatewaySide] = asyncio.Queue()
        self.sides: list[GatewaySide] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=512)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        side = GatewaySide(reader, writer)
        self.sides.append(side)
        await self.accepted.put(side)

    async def accept(self, within: float = 5.0) -> GatewaySide:
        async with asyncio.timeout(within):
            return await self.accepted.get()

    async def close(self) -> None:
        for side in self.sides:
            side.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def raw_gateway() -> AsyncIterator[RawGateway]:
    gateway = RawGateway()
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
async def sim(raw_gateway: RawGateway) -> AsyncIterator[FreeSwitchSimulator]:
    simulator = FreeSwitchSimulator("127.0.0.1", raw_gateway.port, dialplan_playback=0.01)
    try:
        yield simulator
    finally:
        await simulator.close()


async def connected(
    sim: FreeSwitchSimulator, gateway: RawGateway, **kwargs: object
) -> tuple[SimulatedCall, GatewaySide]:
    call = await sim.place_call(**kwargs)  # type: ignore[arg-type]
    return call, await gateway.accept()


def non_variable_names(headers: object) -> list[str]:
    assert isinstance(headers, Headers)
    return [name for name, _ in headers.pairs if not name.startswith("variable_")]


def captured_sip_events() -> dict[str, list[Event]]:
    """The events of the sipp call handed to the outbound socket (a real SIP channel)."""
    transcript: Transcript = load("05-sipp-invite-outbound-socket.txt")
    out: dict[str, list[Event]] = {}
    for frame in FrameParser().frames(transcript.stream("outbound#1", "FS->C")):
        if frame.event is not None:
            out.setdefault(frame.event.name, []).append(frame.event)
    return out


def record_after(transcript: Transcript, line: bytes) -> bytes:
    """The FS->C record that answered the C->FS record ``line`` on outbound#1."""
    records = [r for r in transcript.records if r.connection == "outbound#1"]
    for i, record in enumerate(records):
        if record.direction == "C->FS" and record.data == line:
            return next(r.data for r in records[i + 1 :] if r.direction == "FS->C")
    raise AssertionError(f"{line!r} not in {transcript.name}")


# --- connect and the plain replies ---------------------------------------------------------------


async def test_nothing_is_sent_before_connect_and_the_reply_is_one_encoded_block(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway, caller_number="+15551230000", destination_number="8084")
    reply = await side.raw_reply(b"connect\n\n")
    (frame,) = FrameParser().frames(reply)
    assert reply == bytes(side.received)  # nothing came before the connect reply
    assert reply.startswith(b"Event-Name: CHANNEL_DATA\n")
    assert reply.endswith(
        b"Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n"
    )
    assert b"Caller-Caller-ID-Number: %2B15551230000\n" in reply
    assert frame.body == b""
    assert frame.reply_text == "+OK\n"
    headers = frame.headers
    assert headers["Unique-ID"] == call.uuid
    assert headers["Channel-Name"] == call.channel_name
    assert headers["Caller-Caller-ID-Number"] == "+15551230000"
    assert headers["Caller-Destination-Number"] == "8084"
    assert headers["Call-Direction"] == "inbound"
    assert headers["Answer-State"] == "ringing"
    assert headers["variable_call_control_app_id"] == "demo-app"
    assert headers["variable_current_application"] == "socket"


async def test_connect_reply_has_the_header_layout_of_a_real_sip_call(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    captured = FrameParser().frames(
        load("05-sipp-invite-outbound-socket.txt").select("outbound#1", "FS->C")[0].data
    )
    _, side = await connected(sim, raw_gateway)
    ours = await side.command("connect")
    assert non_variable_names(ours.headers) == non_variable_names(captured[0].headers)


async def test_call_without_an_app_id_has_no_such_variable(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    _, side = await connected(sim, raw_gateway, app_id=None)
    reply = await side.command("connect")
    assert "variable_call_control_app_id" not in reply.headers
    assert (await side.command("getvar call_control_app_id")).reply_text == ""


async def test_replies_are_the_captured_bytes(sim: FreeSwitchSimulator, raw_gateway: RawGateway) -> None:
    exit_capture = load("04a-outbound-connect-answer-exit.txt")
    timeout_capture = load("04c2-outbound-caller-hangup-linger-timeout.txt")
    _, side = await connected(sim, raw_gateway, app_id="capture-app")
    await side.command("connect")
    assert await side.raw_reply(b"myevents\n\n") == record_after(exit_capture, b"myevents\n\n")
    await side.frame()  # CHANNEL_PARK
    assert await side.raw_reply(b"linger\n\n") == record_after(exit_capture, b"linger\n\n")
    assert await side.raw_reply(b"linger 3\n\n") == record_after(timeout_capture, b"linger 3\n\n")
    getvar = b"getvar call_control_app_id\n\n"
    assert await side.raw_reply(getvar) == record_after(exit_capture, getvar)
    not_found = b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
    assert await side.raw_reply(b"no_such_esl_command\n\n") == not_found
    assert (
        await side.raw_reply(b"myevents\n\n")
        == b"Content-Type: command/reply\nReply-Text: -ERR aready enabled.\n\n"
    )


async def test_api_commands_answer_like_freeswitch(sim: FreeSwitchSimulator, raw_gateway: RawGateway) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.command("connect")
    getvar = await side.command(f"api uuid_getvar {call.uuid} call_control_app_id")
    assert (getvar.content_type, getvar.body) == ("api/response", b"demo-app")
    assert (await side.command(f"api uuid_exists {call.uuid}")).body == b"true"
    assert (await side.command("api version")).body == b"FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"
    assert (
        await side.command("api no_such_command foo")
    ).body == b"-ERR no_such_command Command not found!\n"
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await side.command(f"api uuid_kill {missing}")).body == b"-ERR No such channel!\n"
    reply = await side.command(f"sendmsg {missing}")
    assert reply.reply_text == f"-ERR invalid session id [{missing}]"


# --- answer --------------------------------------------------------------------------------------


async def test_answer_events_come_in_freeswitch_order_with_the_application_uuid(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    capture = load("04a-outbound-connect-answer-exit.txt")
    captured_sendmsg = capture.select("outbound#1", "C->FS")[3].data
    tag = "6211875b-2e87-4011-b202-de38598ef2ef"
    assert captured_sendmsg == encode_sendmsg(
        [
            ("call-command", "execute"),
            ("execute-app-name", "answer"),
            ("Event-UUID", tag),
        ]
    )
    call, side = await connected(sim, raw_gateway)
    side.send(b"connect\n\nmyevents\n\nlinger\n\n" + captured_sendmsg)
    replies = [await side.frame() for _ in range(4)]
    assert [f.reply_text for f in replies] == ["+OK\n", "+OK Events Enabled", "+OK will linger", "+OK"]
    park, execute, answer, complete = await side.events(4)
    assert [e.name for e in (park, execute, answer, complete)] == [
        "CHANNEL_PARK",
        "CHANNEL_EXECUTE",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE_COMPLETE",
    ]
    assert execute.get("Application") == complete.get("Application") == "answer"
    assert execute.get("Application-UUID") == complete.get("Application-UUID") == tag
    assert complete.get("Application-Response") == "_none_"
    assert (execute.get("Answer-State"), answer.get("Answer-State")) == ("ringing", "answered")
    assert complete.get("Channel-Call-State") == "ACTIVE"
    assert all(e.unique_id == call.uuid for e in (park, execute, answer, complete))
    sequences = [int(e.get("Event-Sequence") or 0) for e in (park, execute, answer, complete)]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 4
    await call.wait_state("answered")
    assert call.answered.is_set()


async def test_events_have_the_header_layout_of_the_captured_sip_call(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    captured = captured_sip_events()
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    side.send(answer("a-1"))
    await side.frame()
    ours = await side.events(3)
    await call.caller_hangup()
    ours += await side.events(6)
    names = [e.name for e in ours]
    assert names == ["CHANNEL_EXECUTE", "CHANNEL_ANSWER", "CHANNEL_EXECUTE_COMPLETE", *HANGUP_SEQUENCE]
    seen: dict[str, int] = {}
    for event in ours:
        index = seen.get(event.name, 0)
        seen[event.name] = index + 1
        real = captured[event.name][index]
        assert non_variable_names(event.headers) == non_variable_names(real.headers), event.name


async def test_an_answer_that_never_completes_sends_only_channel_execute(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway, answer_completes=False)
    await side.handshake()
    side.send(answer("a-1"))
    assert (await side.frame()).reply_text == "+OK"
    (execute,) = await side.events(1)
    assert (execute.name, execute.get("Application-UUID")) == ("CHANNEL_EXECUTE", "a-1")
    # Anything after EXECUTE would already be on the wire before the reply to this.
    assert (await side.command("getvar call_control_app_id")).reply_text == "demo-app"
    assert call.state == "ringing"


async def test_an_unknown_application_hangs_up_destination_out_of_order(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    message = [("call-command", "execute"), ("execute-app-name", "no_such_app"), ("Event-UUID", "x-1")]
    assert (
        await side.raw_reply(encode_sendmsg(message))
    ) == b"Content-Type: command/reply\nReply-Text: +OK\n\n"
    events = await side.events(6)
    assert [e.name for e in events] == HANGUP_SEQUENCE
    assert events[0].get("Hangup-Cause") == "DESTINATION_OUT_OF_ORDER"
    assert events[0].get("variable_app_uuid") == "x-1"
    assert all(e.get("Application-UUID") != "x-1" for e in events)
    assert call.hangup_cause == "DESTINATION_OUT_OF_ORDER"


# --- hangup by the gateway -----------------------------------------------------------------------


async def test_sendmsg_hangup_sequence_then_linger_notice_then_exit(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    capture = load("04f-outbound-sendmsg-hangup.txt")
    captured = b"sendmsg\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n"
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    assert await side.raw_reply(captured) == record_after(capture, captured)
    events = await side.events(6)
    assert [e.name for e in events] == HANGUP_SEQUENCE
    hangup_event, _, socket_done, hanging, reporting, complete = events
    assert hangup_event.get("Hangup-Cause") == "USER_BUSY"
    assert hangup_event.get("Answer-State") == "hangup"
    assert socket_done.get("Application") == "socket"
    assert socket_done.get("Application-Data") == f"127.0.0.1:{raw_gateway.port} async full"
    assert (hanging.get("Channel-State"), reporting.get("Channel-State")) == ("CS_HANGUP", "CS_REPORTING")
    assert Headers(complete.headers).get_all("Hangup-Cause") == ["USER_BUSY", "USER_BUSY"]
    assert complete.get("variable_hangup_cause") == "USER_BUSY"
    assert complete.get("variable_hangup_cause_q850") == "17"
    notice, raw = await side.raw_frame()
    assert raw == encode_disconnect_notice(call.uuid, "linger", -1, channel_name=call.channel_name)
    assert notice.headers["Channel-Name"] == call.channel_name  # raw, not URL-encoded
    assert call.state == "hangup"
    assert call.hangup_cause == "USER_BUSY"

    # While lingering: sendmsg is "+OK" and nothing else; getvar still works.
    assert (await side.raw_reply(answer("late"))).endswith(b"Reply-Text: +OK\n\n")
    assert (await side.command("getvar call_control_app_id")).reply_text == "demo-app"

    assert (await side.command("exit")).reply_text == "+OK bye"
    _, raw_notice = await side.raw_frame()
    assert raw_notice == encode_disconnect_notice(call.uuid, "disconnect", None, GOODBYE)
    await side.eof()
    await call.wait_closed()
    await call.wait_state("destroyed")
    assert not call.returned_to_dialplan.is_set()


@pytest.mark.parametrize(
    ("asked", "name", "q850"),
    [
        ("USER_BUSY", "USER_BUSY", "17"),
        ("user_busy", "USER_BUSY", "17"),
        ("NOT_A_CAUSE", "NORMAL_CLEARING", "16"),
        ("17", "USER_BUSY", "17"),
        ("999", "UNKNOWN", "16"),
        ("CALL_REJECTED", "CALL_REJECTED", "21"),
    ],
)
async def test_hangup_causes_are_read_like_freeswitch(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway, asked: str, name: str, q850: str
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    side.send(hangup(asked))
    assert (await side.frame()).reply_text == "+OK"
    complete = (await side.events(6))[-1]
    assert complete.get("Hangup-Cause") == name
    assert complete.get("variable_hangup_cause") == name
    assert complete.get("variable_hangup_cause_q850") == q850
    assert call.hangup_cause == name


async def test_hangup_without_linger_sends_the_goodbye_notice_and_closes(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake(linger=None)
    side.send(hangup("NORMAL_CLEARING"))
    await side.frame()
    assert [e.name for e in await side.events(6)] == HANGUP_SEQUENCE
    _, raw = await side.raw_frame()
    assert raw == encode_disconnect_notice(call.uuid, "disconnect", None, GOODBYE)
    await side.eof()
    assert call.state == "destroyed"


# --- exit / TCP close: back to the dialplan ------------------------------------------------------


async def test_exit_says_bye_closes_and_the_call_goes_back_to_the_dialplan(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    capture = load("04a-outbound-connect-answer-exit.txt")
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    assert await side.raw_reply(b"exit\n\n") == record_after(capture, b"exit\n\n")
    _, notice = await side.raw_frame()
    captured_notice = capture.select("outbound#1", "FS->C")[-1].data
    assert notice == captured_notice.replace(b"d6431827-b82a-457c-b256-3e3ed4497dfe", call.uuid.encode())
    await side.eof()
    await asyncio.wait_for(call.returned_to_dialplan.wait(), 5)
    await call.wait_state("destroyed")
    assert call.hangup_cause == "NORMAL_CLEARING"
    assert [c.line for c in call.commands] == ["connect", "myevents", "linger", "exit"]


async def test_tcp_close_without_exit_returns_the_call_to_the_dialplan(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    side.close()
    await call.wait_closed()
    await asyncio.wait_for(call.returned_to_dialplan.wait(), 5)
    assert call.state in ("dialplan", "destroyed")


async def test_a_refused_connection_goes_on_in_the_dialplan(raw_gateway: RawGateway) -> None:
    await raw_gateway.close()  # nothing listens on the port any more
    simulator = FreeSwitchSimulator("127.0.0.1", raw_gateway.port, dialplan_playback=0)
    try:
        call = await simulator.place_call()
        assert isinstance(call.socket_error, OSError)
        assert call.returned_to_dialplan.is_set()
        await call.wait_state("destroyed")
        assert call.hangup_cause == "NORMAL_CLEARING"
    finally:
        await simulator.close()


# --- the caller hangs up first -------------------------------------------------------------------


async def test_caller_hangup_with_linger_keeps_the_socket_until_exit(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    side.send(answer("a-1"))
    await side.frame()
    await side.events(3)
    await call.caller_hangup()
    events = await side.events(6)
    assert [e.name for e in events] == HANGUP_SEQUENCE
    assert events[0].get("Hangup-Cause") == "NORMAL_CLEARING"
    assert events[-1].get("variable_sip_hangup_disposition") == "recv_bye"
    notice = await side.frame()
    assert notice.headers["Content-Disposition"] == "linger"
    assert notice.headers["Linger-Time"] == "-1"
    assert (await side.command(f"api uuid_exists {call.uuid}")).body == b"false"
    assert (await side.command("getvar call_control_app_id")).reply_text == "demo-app"
    assert call.socket_open
    assert (await side.command("exit")).reply_text == "+OK bye"
    assert (await side.frame()).body == GOODBYE
    await side.eof()
    assert call.state == "destroyed"


async def test_caller_hangup_before_answer_without_linger(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake(linger=None)
    await call.caller_hangup("ORIGINATOR_CANCEL")
    events = await side.events(6)
    assert [e.name for e in events] == HANGUP_SEQUENCE
    assert events[0].get("Channel-Call-State") == "RINGING"
    assert events[-1].get("variable_hangup_cause") == "ORIGINATOR_CANCEL"
    assert events[-1].get("variable_hangup_cause_q850") == "16"
    notice = await side.frame()
    assert (notice.headers["Content-Disposition"], notice.body) == ("disconnect", GOODBYE)
    await side.eof()
    assert (call.state, call.hangup_cause) == ("destroyed", "ORIGINATOR_CANCEL")


async def test_linger_with_a_timeout_ends_with_the_goodbye_notice(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake(linger="linger 0")
    await call.caller_hangup()
    await side.events(6)
    linger = await side.frame()
    assert (linger.headers["Content-Disposition"], linger.headers["Linger-Time"]) == ("linger", "0")
    final = await side.frame()
    assert (final.headers["Content-Disposition"], final.body) == ("disconnect", GOODBYE)
    await side.eof()
    await call.wait_state("destroyed")


# --- faults --------------------------------------------------------------------------------------


async def test_drop_socket_closes_without_any_notice(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    await call.drop_socket()
    await side.eof()
    assert call.state == "destroyed"
    assert not call.returned_to_dialplan.is_set()


async def test_error_replies_answer_the_command_and_nothing_happens(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    refused = "-ERR invalid session id [x]"
    call, side = await connected(sim, raw_gateway, error_replies={"sendmsg": refused})
    await side.handshake()
    side.send(answer("a-1"))
    reply = await side.frame()
    assert (reply.reply_text, reply.is_ok) == (refused, False)
    assert (await side.command("getvar call_control_app_id")).reply_text == "demo-app"
    assert call.state == "ringing"


async def test_wait_for_command_sees_past_and_future_commands(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    assert (await call.wait_for_command(lambda c: c.verb == "myevents")).line == "myevents"
    waiting = asyncio.create_task(call.wait_for_command(lambda c: c.verb == "sendmsg"))
    side.send(hangup("USER_BUSY"))
    command = await waiting
    assert dict(command.headers) == {"call-command": "hangup", "hangup-cause": "USER_BUSY"}
    with pytest.raises(TimeoutError):
        await call.wait_for_command(lambda c: c.verb == "never", timeout=0.01)


async def test_shutdown_hangs_up_system_shutdown_then_closes_every_socket(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    lingering, side_a = await connected(sim, raw_gateway)
    await side_a.handshake()
    plain, side_b = await connected(sim, raw_gateway)
    await side_b.handshake(linger=None)
    await sim.shutdown_switch()

    # As captured in 06: HANGUP, the linger notice, the rest of the teardown, the shutdown notice.
    first = await side_a.frame()
    assert first.event is not None
    assert (first.event.name, first.event.get("Hangup-Cause")) == ("CHANNEL_HANGUP", "SYSTEM_SHUTDOWN")
    linger = await side_a.frame()
    assert linger.headers["Content-Disposition"] == "linger"
    assert [e.name for e in await side_a.events(5)] == HANGUP_SEQUENCE[1:]
    _, raw = await side_a.raw_frame()
    captured = load("06-freeswitch-shutdown-with-live-session.txt").select("outbound#1", "FS->C")[-1].data
    assert raw == captured.replace(b"7b242f25-b718-43cb-94ac-fff54d029b05", lingering.uuid.encode())
    await side_a.eof()

    events = await side_b.events(6)
    assert [e.name for e in events] == HANGUP_SEQUENCE
    assert events[-1].get("Hangup-Cause") == "SYSTEM_SHUTDOWN"
    assert (await side_b.frame()).headers["Content-Disposition"] == "disconnect"
    await side_b.eof()
    assert (lingering.state, plain.state) == ("destroyed", "destroyed")
    assert lingering.hangup_cause == plain.hangup_cause == "SYSTEM_SHUTDOWN"
    with pytest.raises(RuntimeError):
        await sim.place_call()


async def test_two_hundred_calls_at_once(sim: FreeSwitchSimulator, raw_gateway: RawGateway) -> None:
    calls = 200

    async def drive(side: GatewaySide) -> str:
        await side.handshake()
        side.send(answer("a"))
        await side.frame()
        assert [e.name for e in await side.events(3)][-1] == "CHANNEL_EXECUTE_COMPLETE"
        side.send(hangup("USER_BUSY"))
        await side.frame()
        complete = (await side.events(6))[-1]
        assert (await side.frame()).headers["Content-Disposition"] == "linger"
        await side.command("exit")
        await side.frame()
        await side.eof()
        return complete.unique_id or ""

    placed = await asyncio.gather(*(sim.place_call(caller_number=str(2000 + n)) for n in range(calls)))
    sides = [await raw_gateway.accept() for _ in range(calls)]
    uuids = await asyncio.gather(*(drive(side) for side in sides))
    assert sorted(uuids) == sorted(call.uuid for call in placed)
    assert {call.state for call in placed} == {"destroyed"}
    assert {call.hangup_cause for call in placed} == {"USER_BUSY"}


async def test_cli_places_calls_and_the_callers_hang_up_after_hold(raw_gateway: RawGateway) -> None:
    args = _parser().parse_args(
        ["--gateway", f"127.0.0.1:{raw_gateway.port}", "--calls", "2", "--hold", "0.05"]
    )
    runner = asyncio.create_task(run(args))
    sides = [await raw_gateway.accept(), await raw_gateway.accept()]
    # The gateway never answers: each caller gives up after --hold; no myevents, so no events,
    # no linger, so the goodbye notice and the close.
    for side in sides:
        notice = await side.frame()
        assert (notice.headers["Content-Disposition"], notice.body) == ("disconnect", GOODBYE)
        await side.eof()
    assert await asyncio.wait_for(runner, 10) == 0
