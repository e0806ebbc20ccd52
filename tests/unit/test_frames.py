"""The ESL wire format against bytes captured from a real FreeSWITCH 1.10.12.

Every FS->C record of every transcript must parse as exactly one frame and
re-encode to the same bytes; every C->FS record must come out of our encoders
byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import callcontrol.esl
from callcontrol.esl import frames
from callcontrol.esl.frames import (
    Command,
    CommandParser,
    Event,
    Frame,
    FrameError,
    FrameParser,
    Headers,
    UnsafeValue,
    encode_api_response,
    encode_auth_request,
    encode_command,
    encode_connect_reply,
    encode_disconnect_notice,
    encode_event_json,
    encode_event_plain,
    encode_event_xml,
    encode_reply,
    encode_sendmsg,
    url_decode,
    url_encode,
)
from tests.transcripts import Transcript, esl_files, load

GOODBYE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
# greenswitch's fake server sends this value; it mixes %, multibyte UTF-8 and URL-unsafe bytes.
AWKWARD = "%^ć%$éí#$"

ESL_FILES = esl_files()
needs_transcripts = pytest.mark.skipif(not ESL_FILES, reason="shared/freeswitch-esl transcripts not found")


def reencode(frame: Frame) -> bytes:
    """Rebuild a parsed FS->C frame with the FreeSWITCH-side encoders."""
    headers = Headers(frame.headers)
    pairs = headers.pairs
    kind = frame.content_type
    if kind == "command/reply" and "Event-Name" in headers:
        assert [name for name, _ in pairs[-4:]] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
        return encode_connect_reply(
            pairs[:-4], socket_mode=headers["Socket-Mode"], control=headers["Control"]
        )
    if kind == "command/reply":
        assert [name for name, _ in pairs[:2]] == ["Content-Type", "Reply-Text"]
        return encode_reply(headers["Reply-Text"], pairs[2:])
    if kind == "text/event-plain":
        assert frame.event is not None
        return encode_event_plain(Headers(frame.event.headers).pairs, frame.event.body)
    if kind == "text/event-json":
        return encode_event_json(frame.body)
    if kind == "text/event-xml":
        return encode_event_xml(frame.body)
    if kind == "api/response":
        return encode_api_response(frame.body)
    if kind == "auth/request":
        return encode_auth_request()
    if kind == "text/disconnect-notice":
        if headers.get("Content-Disposition") == "linger":
            return encode_disconnect_notice(
                headers["Controlled-Session-UUID"],
                "linger",
                int(headers["Linger-Time"]),
                channel_name=headers["Channel-Name"],
            )
        return encode_disconnect_notice(
            headers.get("Controlled-Session-UUID"), "disconnect", None, frame.body
        )
    raise AssertionError(f"unexpected frame type {kind!r}")


def reencode_command(command: Command) -> bytes:
    pairs = Headers(command.headers).pairs
    if command.verb == "sendmsg":
        return encode_sendmsg(pairs, command.argument or None, body=command.body)
    return encode_command(command.line, pairs, body=command.body)


def fs_frames(transcript: Transcript, connection: str) -> list[Frame]:
    return FrameParser().frames(transcript.stream(connection, "FS->C"))


def first_event(frames_: list[Frame], name: str, **match: str) -> Event:
    for frame in frames_:
        event = frame.event
        if event is not None and event.name == name and all(event.get(k) == v for k, v in match.items()):
            return event
    raise AssertionError(f"no {name} {match}")


# --- every transcript ----------------------------------------------------------------------------


@needs_transcripts
@pytest.mark.parametrize("name", ESL_FILES)
def test_every_fs_record_is_one_frame_that_reencodes_to_the_same_bytes(name: str) -> None:
    transcript = load(name)
    for connection in transcript.connections():
        records = transcript.select(connection, "FS->C")
        parsed = FrameParser().frames(transcript.stream(connection, "FS->C"))
        assert len(parsed) == len(records), connection
        for record, frame in zip(records, parsed, strict=True):
            assert FrameParser().frames(record.data) == [frame]
            assert reencode(frame) == record.data


@needs_transcripts
@pytest.mark.parametrize("name", ESL_FILES)
def test_byte_at_a_time_feeding_gives_the_same_frames(name: str) -> None:
    transcript = load(name)
    for connection in transcript.connections():
        stream = transcript.stream(connection, "FS->C")
        parser = FrameParser()
        dribbled: list[Frame] = []
        for i in range(len(stream)):
            parser.feed(stream[i : i + 1])
            while (frame := parser.next_frame()) is not None:
                dribbled.append(frame)
        assert dribbled == FrameParser().frames(stream)
        assert parser.buffered == 0


@needs_transcripts
@pytest.mark.parametrize("name", ESL_FILES)
def test_every_client_record_comes_out_of_our_encoders_byte_for_byte(name: str) -> None:
    transcript = load(name)
    for connection in transcript.connections():
        records = transcript.select(connection, "C->FS")
        commands = CommandParser().commands(transcript.stream(connection, "C->FS"))
        assert len(commands) == len(records)
        for record, command in zip(records, commands, strict=True):
            assert reencode_command(command) == record.data


# --- spot checks on real values ------------------------------------------------------------------


@needs_transcripts
def test_connect_reply_is_one_url_encoded_block_with_reply_text_ok() -> None:
    transcript = load("04a-outbound-connect-answer-exit.txt")
    record = transcript.select("outbound#1", "FS->C")[0]
    assert b"Reply-Text: %2BOK%0A\n" in record.data
    (reply,) = FrameParser().frames(record.data)
    assert reply.content_type == "command/reply"
    assert reply.reply_text == "+OK\n"
    assert reply.is_ok
    assert reply.event is None
    assert reply.body == b""
    assert next(iter(reply.headers)) == "Event-Name"
    assert reply.headers["Unique-ID"] == "d6431827-b82a-457c-b256-3e3ed4497dfe"
    assert reply.headers["Event-Name"] == "CHANNEL_DATA"
    assert reply.headers["Answer-State"] == "ringing"
    assert reply.headers["Socket-Mode"] == "async"
    assert reply.headers["Control"] == "full"
    assert reply.headers["variable_call_control_app_id"] == "capture-app"
    assert reply.headers["variable_current_application_data"] == "127.0.0.1:8084 async full"
    assert reply.headers["Caller-Callee-ID-Name"] == "Outbound Call"
    assert reply.headers["FreeSWITCH-IPv6"] == "fd00::2"
    assert reply.headers["Event-Date-GMT"] == "Tue, 24 Nov 2026 14:27:19 GMT"


@needs_transcripts
def test_sip_connect_reply_decodes_sdp_and_uris() -> None:
    transcript = load("05-sipp-invite-outbound-socket.txt")
    reply = fs_frames(transcript, "outbound#1")[0]
    assert reply.headers["Channel-Name"] == "sofia/internal/sipp@127.0.0.1:5070"
    assert reply.headers["variable_sip_full_from"] == "sipp <sip:sipp@127.0.0.1:5070>;tag=22903SIPpTag001"
    assert reply.headers["variable_switch_r_sdp"].startswith("v=0\r\no=user1 53655765 2353687637 IN IP4")


@needs_transcripts
def test_execute_complete_carries_the_sendmsg_event_uuid() -> None:
    transcript = load("04a-outbound-connect-answer-exit.txt")
    commands = CommandParser().commands(transcript.stream("outbound#1", "C->FS"))
    sendmsg = next(c for c in commands if c.verb == "sendmsg")
    assert sendmsg.headers["call-command"] == "execute"
    assert sendmsg.headers["execute-app-name"] == "answer"
    tag = sendmsg.headers["Event-UUID"]
    assert tag == "6211875b-2e87-4011-b202-de38598ef2ef"
    parsed = fs_frames(transcript, "outbound#1")
    complete = first_event(parsed, "CHANNEL_EXECUTE_COMPLETE", Application="answer")
    assert complete.get("Application-UUID") == tag
    assert complete.get("Application-Response") == "_none_"
    assert complete.get("Answer-State") == "answered"
    assert complete.unique_id == "d6431827-b82a-457c-b256-3e3ed4497dfe"
    names = [f.event.name for f in parsed if f.event is not None]
    assert names == ["CHANNEL_PARK", "CHANNEL_EXECUTE", "CHANNEL_ANSWER", "CHANNEL_EXECUTE_COMPLETE"]


@needs_transcripts
def test_background_job_body_is_the_inner_content_length_body() -> None:
    parsed = fs_frames(load("01-inbound-auth-api.txt"), "inbound")
    status = first_event(parsed, "BACKGROUND_JOB", **{"Job-Command": "status"})
    assert status.body.startswith(b"UP 0 years, 0 days")
    assert status.body.endswith(b"Current Stack Size/Max 240K/8192K\n")
    assert "Content-Length" not in status.headers
    kill = first_event(parsed, "BACKGROUND_JOB", **{"Job-UUID": "11111111-2222-3333-4444-555555555555"})
    assert kill.body == b"-ERR No such channel!\n"
    assert kill.get("Job-Command-Arg") == "00000000-0000-0000-0000-000000000000"
    bgapi = next(f for f in parsed if (f.reply_text or "").startswith("+OK Job-UUID: 1111"))
    assert bgapi.headers["Job-UUID"] == "11111111-2222-3333-4444-555555555555"


@needs_transcripts
def test_api_response_bodies_keep_or_lack_the_trailing_newline_as_sent() -> None:
    inbound = fs_frames(load("01-inbound-auth-api.txt"), "inbound")
    bodies = [f.body for f in inbound if f.content_type == "api/response"]
    assert b"FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n" in bodies
    assert b"-ERR No such channel!\n" in bodies
    assert b"-ERR no_such_command Command not found!\n" in bodies
    assert b"-USAGE: <uuid> [cause]\n" in bodies
    getvar = [f.body for f in fs_frames(load("04a-outbound-connect-answer-exit.txt"), "outbound#1")]
    assert b"capture-app" in getvar  # uuid_getvar: no newline
    exists = [f.body for f in fs_frames(load("04c-outbound-caller-hangup-linger.txt"), "outbound#1")]
    assert b"false" in exists


@needs_transcripts
def test_json_and_xml_events_are_raw_bodies() -> None:
    parsed = fs_frames(load("01-inbound-auth-api.txt"), "inbound")
    as_json = [f for f in parsed if f.content_type == "text/event-json"]
    assert as_json
    assert all(f.event is None for f in as_json)
    decoded = json.loads(as_json[0].body)
    assert decoded["Event-Name"] == "API"
    assert decoded["FreeSWITCH-IPv6"] == "fd00::2"
    job = next(json.loads(f.body) for f in as_json if b"BACKGROUND_JOB" in f.body)
    assert job["_body"].startswith("UP 0 years")
    (as_xml,) = [f for f in parsed if f.content_type == "text/event-xml"]
    assert as_xml.event is None
    assert as_xml.body.startswith(b"<event>\n  <headers>\n    <Event-Name>BACKGROUND_JOB</Event-Name>")


@needs_transcripts
def test_disconnect_notices_are_raw_and_keep_their_body() -> None:
    exit_frames = fs_frames(load("04a-outbound-connect-answer-exit.txt"), "outbound#1")
    bye, notice = exit_frames[-2:]
    assert bye.reply_text == "+OK bye"
    assert notice.content_type == "text/disconnect-notice"
    assert notice.headers["Content-Disposition"] == "disconnect"
    assert notice.headers["Controlled-Session-UUID"] == "d6431827-b82a-457c-b256-3e3ed4497dfe"
    assert notice.body == GOODBYE
    linger = fs_frames(load("05-sipp-invite-outbound-socket.txt"), "outbound#1")[-3]
    assert linger.headers["Content-Disposition"] == "linger"
    assert linger.headers["Channel-Name"] == "sofia/internal/sipp@127.0.0.1:5070"
    assert linger.headers["Linger-Time"] == "-1"
    assert linger.body == b""
    shutdown = fs_frames(load("06-freeswitch-shutdown-with-live-session.txt"), "outbound#1")[-1]
    assert shutdown.headers["Content-Disposition"] == "disconnect"
    assert shutdown.body == b"The system is being shut down.\n"


@needs_transcripts
def test_plain_command_replies_are_not_url_decoded() -> None:
    replies = [f.reply_text for f in fs_frames(load("04a-outbound-connect-answer-exit.txt"), "outbound#1")]
    assert replies[1:4] == ["+OK Events Enabled", "+OK will linger", "+OK"]
    assert "capture-app" in replies


@needs_transcripts
def test_repeated_headers_are_kept_in_wire_order() -> None:
    parsed = fs_frames(load("04f-outbound-sendmsg-hangup.txt"), "outbound#1")
    complete = first_event(parsed, "CHANNEL_HANGUP_COMPLETE")
    headers = Headers(complete.headers)
    assert headers.get_all("Hangup-Cause") == ["USER_BUSY", "USER_BUSY"]
    assert complete.get("hangup-cause") == "USER_BUSY"  # lookups ignore case
    assert complete.get("variable_hangup_cause_q850") == "17"


# --- URL encoding --------------------------------------------------------------------------------


def test_url_encode_escapes_exactly_what_switch_url_encode_escapes() -> None:
    unsafe = set('\r\n #%&+:;<=>?@[\\]^`{|}"')
    for code in range(1, 128):
        char = chr(code)
        expected = f"%{code:02X}" if code < 0x20 or code > 0x7E or char in unsafe else char
        assert url_encode(char) == expected, repr(char)
    assert url_encode("é") == "%C3%A9"


def test_url_encode_leaves_existing_upper_case_escapes_alone_like_freeswitch() -> None:
    assert url_encode("100%41") == "100%41"
    assert url_encode("100%4a") == "100%254a"
    assert url_encode("50%") == "50%25"


def test_awkward_non_ascii_value_survives_encoding_and_split_reads() -> None:
    assert url_encode(AWKWARD) == "%25%5E%C4%87%25$%C3%A9%C3%AD%23$"
    wire = encode_event_plain([("Event-Name", "CUSTOM"), ("X-Awkward", AWKWARD)], body=AWKWARD.encode())
    assert b"X-Awkward: %25%5E%C4%87%25$%C3%A9%C3%AD%23$\n" in wire
    for cut in range(1, len(wire)):
        parser = FrameParser()
        assert parser.frames(wire[:cut]) == []
        (frame,) = parser.frames(wire[cut:])
        assert frame.event is not None
        assert frame.event.get("X-Awkward") == AWKWARD
        assert frame.event.body.decode() == AWKWARD


def test_multibyte_body_split_inside_a_character() -> None:
    body = "Zoë → ćé".encode()
    wire = encode_api_response(body) + encode_reply("+OK")
    for cut in range(1, len(wire)):
        parser = FrameParser()
        first = parser.frames(wire[:cut])
        rest = parser.frames(wire[cut:])
        api, reply = first + rest
        assert api.body.decode() == "Zoë → ćé"
        assert reply.reply_text == "+OK"


def test_literal_percent_and_plus_in_raw_frames_are_data() -> None:
    (reply,) = FrameParser().frames(encode_reply("100%25 +1%20x"))
    assert reply.reply_text == "100%25 +1%20x"
    (notice,) = FrameParser().frames(
        encode_disconnect_notice("u", "linger", 5, channel_name="sofia/internal/+1%20@h")
    )
    assert notice.headers["Channel-Name"] == "sofia/internal/+1%20@h"


def test_url_decode_ignores_broken_escapes() -> None:
    assert url_decode(b"a%2Bb%zz%4") == "a+b%zz%4"
    assert url_decode(b"%c3%a9") == "é"


def test_empty_event_values_are_written_undef_like_freeswitch() -> None:
    wire = encode_event_plain([("Event-Name", "CUSTOM"), ("Empty", "")])
    assert b"Empty: _undef_\n" in wire


def test_line_breaks_in_url_encoded_values_are_escaped_not_written() -> None:
    wire = encode_event_plain([("Event-Name", "CUSTOM"), ("X", "a\r\nInjected: yes")])
    assert b"X: a%0D%0AInjected%3A%20yes\n" in wire
    (frame,) = FrameParser().frames(wire)
    assert frame.event is not None
    assert "Injected" not in frame.event.headers
    assert frame.event.get("X") == "a\r\nInjected: yes"


# --- parser robustness ---------------------------------------------------------------------------


def test_many_frames_in_one_chunk_and_none_until_complete() -> None:
    wire = encode_reply("+OK a") + encode_api_response(b"x\n") + encode_reply("+OK b")
    parser = FrameParser()
    assert parser.frames(wire[:-1]) == [
        Frame({"Content-Type": "command/reply", "Reply-Text": "+OK a"}),
        Frame({"Content-Type": "api/response", "Content-Length": "2"}, b"x\n"),
    ]
    assert parser.next_frame() is None
    (last,) = parser.frames(wire[-1:])
    assert last.reply_text == "+OK b"


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not a header\n\n",
        b": no name\n\n",
        b"Content-Type: api/response\nContent-Length: abc\n\n",
        b"Content-Type: api/response\nContent-Length: -1\n\n",
        b"Content-Type: api/response\nContent-Length: 99999999999\n\n",
        b"Content-Length: 10\nContent-Type: text/event-plain\n\nno colon\n\n",
        b"Content-Length: 39\nContent-Type: text/event-plain\n\nEvent-Name: X\nContent-Length: 500\n\nabc\n",
    ],
)
def test_garbage_raises_frame_error(garbage: bytes) -> None:
    with pytest.raises(FrameError):
        FrameParser().frames(garbage)


def test_an_endless_header_block_is_refused() -> None:
    parser = FrameParser(max_frame_bytes=1024)
    with pytest.raises(FrameError):
        parser.frames(b"X-Long: " + b"a" * 2000)


def test_command_parser_reads_like_freeswitch() -> None:
    parser = CommandParser()
    wire = b"\r\n\nconnect\n\nsendmsg\r\ncall-command:   execute\nexecute-app-name: answer\n\n"
    wire += b"api version\nContent-Length: 3\n\nabc" + b"linger\n\r\n"
    commands = [c for i in range(len(wire)) for c in parser.commands(wire[i : i + 1])]
    assert [c.line for c in commands] == ["connect", "sendmsg", "api version", "linger"]
    assert dict(commands[1].headers) == {"call-command": "execute", "execute-app-name": "answer"}
    assert commands[2].body == b"abc"
    assert commands[2].verb == "api"
    assert commands[2].argument == "version"
    with pytest.raises(FrameError):
        CommandParser().commands(b"sendmsg\nno colon here\n\n")


# --- encoders ------------------------------------------------------------------------------------


@needs_transcripts
def test_sendmsg_encoders_produce_the_captured_bytes() -> None:
    answer = load("04a-outbound-connect-answer-exit.txt").select("outbound#1", "C->FS")[3].data
    assert answer == encode_sendmsg(
        [
            ("call-command", "execute"),
            ("execute-app-name", "answer"),
            ("Event-UUID", "6211875b-2e87-4011-b202-de38598ef2ef"),
        ]
    )
    hangup = load("04f-outbound-sendmsg-hangup.txt").select("outbound#1", "C->FS")[4].data
    assert hangup == b"sendmsg\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n"
    assert hangup == encode_sendmsg([("call-command", "hangup"), ("hangup-cause", "USER_BUSY")])
    assert encode_command("connect") == b"connect\n\n"
    assert encode_command("linger 3") == b"linger 3\n\n"


BAD_TEXT = ["a\rb", "a\nb", "a\0b"]
BAD_NAMES = ["", "a:b", "a b", "a\nb", "a\rb", "a\0b", "Content-Length"]

RAW_TEXT_ENCODERS: list[Callable[[str], bytes]] = [
    lambda v: encode_command(v),
    lambda v: encode_command("bgapi status", [("Job-UUID", v)]),
    lambda v: encode_sendmsg([("execute-app-arg", v)]),
    lambda v: encode_sendmsg([("call-command", "hangup")], uuid=v),
    lambda v: encode_reply(v),
    lambda v: encode_reply("+OK", [("Job-UUID", v)]),
    lambda v: encode_disconnect_notice(v, "disconnect", None, b"bye"),
    lambda v: encode_disconnect_notice(v, "linger", -1, channel_name="c"),
    lambda v: encode_disconnect_notice("u", "linger", -1, channel_name=v),
]
NAME_ENCODERS: list[Callable[[str], bytes]] = [
    lambda n: encode_command("bgapi status", [(n, "x")]),
    lambda n: encode_sendmsg([(n, "x")]),
    lambda n: encode_reply("+OK", [(n, "x")]),
    lambda n: encode_connect_reply([(n, "x")]),
    lambda n: encode_event_plain([(n, "x")]),
]
URL_ENCODED_VALUE_ENCODERS: list[Callable[[str], bytes]] = [
    lambda v: encode_connect_reply([("Unique-ID", v)]),
    lambda v: encode_event_plain([("Event-Name", v)]),
]


@pytest.mark.parametrize("bad", BAD_TEXT)
@pytest.mark.parametrize("encoder", RAW_TEXT_ENCODERS)
def test_raw_encoders_refuse_line_breaks_and_nul(encoder: Callable[[str], bytes], bad: str) -> None:
    with pytest.raises(UnsafeValue):
        encoder(bad)


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("encoder", NAME_ENCODERS)
def test_every_encoder_refuses_bad_header_names(encoder: Callable[[str], bytes], bad: str) -> None:
    with pytest.raises(UnsafeValue):
        encoder(bad)


@pytest.mark.parametrize("encoder", URL_ENCODED_VALUE_ENCODERS)
def test_url_encoded_values_refuse_nul_and_escape_line_breaks(encoder: Callable[[str], bytes]) -> None:
    with pytest.raises(UnsafeValue):
        encoder("a\0b")
    assert b"a%0D%0Ab" in encoder("a\r\nb")


@pytest.mark.parametrize("line", ["", "   ", "sendmsg x\nexecute-app-name: hangup"])
def test_encode_command_refuses_empty_or_multi_line_commands(line: str) -> None:
    with pytest.raises(UnsafeValue):
        encode_command(line)


def test_uuid_with_spaces_cannot_smuggle_a_sendmsg_target() -> None:
    with pytest.raises(UnsafeValue):
        encode_sendmsg([("call-command", "hangup")], uuid="a b")


def test_bodies_are_length_framed() -> None:
    wire = encode_sendmsg([("call-command", "execute"), ("execute-app-name", "playback")], body=b"x\n\ny")
    (command,) = CommandParser().commands(wire)
    assert command.body == b"x\n\ny"
    assert command.headers["Content-Length"] == "4"


# --- frame properties and the public surface -----------------------------------------------------


def test_frame_properties() -> None:
    ok, err = FrameParser().frames(encode_reply("+OK accepted") + encode_reply("-ERR invalid"))
    assert ok.is_ok
    assert not err.is_ok
    assert err.reply_text == "-ERR invalid"
    (api,) = FrameParser().frames(encode_api_response(b"+OK\n"))
    assert api.reply_text is None
    assert not api.is_ok
    event = Event({"Event-Name": "CHANNEL_ANSWER", "Unique-ID": "u-1"})
    assert (event.name, event.unique_id, event.get("missing", "d")) == ("CHANNEL_ANSWER", "u-1", "d")
    assert hash(event) == hash(Event({"Event-Name": "CHANNEL_ANSWER", "Unique-ID": "u-1"}))


def test_public_surface_is_complete() -> None:
    defined = {
        name
        for name, value in vars(frames).items()
        if not name.startswith("_")
        and getattr(value, "__module__", frames.__name__) == frames.__name__
        and (callable(value) or name.isupper())
        and name not in {"annotations", "Final", "Literal"}
    }
    assert defined <= set(frames.__all__)
    assert set(callcontrol.esl.__all__) == set(frames.__all__)
    assert all(getattr(callcontrol.esl, name) is getattr(frames, name) for name in frames.__all__)


def test_command_content_length_with_trailing_whitespace_control_is_read_like_atoi() -> None:
    # Used to escape as a bare ValueError; FreeSWITCH's atoi() reads "3".
    from callcontrol.esl.frames import CommandParser

    [command] = CommandParser().commands(b"sendmsg\nContent-Length: 3\x1c\n\nabc")
    assert command.body == b"abc"
