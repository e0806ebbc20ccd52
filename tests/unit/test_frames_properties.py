"""Properties of the Event Socket parsers for any byte stream (hypothesis).

Whatever a peer sends (garbage, truncation, wrong lengths, huge headers, valid
frames split anywhere or followed by junk), a parser returns frames or raises
`FrameError`, nothing else, and never holds more than one frame's limit.
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcontrol.esl.frames import (
    Command,
    CommandParser,
    Frame,
    FrameError,
    FrameParser,
    encode_api_response,
    encode_disconnect_notice,
    encode_event_plain,
    encode_reply,
)

LIMIT = 600  # small, so that the limit is reached often
# Bounded and reproducible: a fixed number of examples, each with a deadline, same seed every run.
BOUNDED = settings(max_examples=100, deadline=timedelta(seconds=2), derandomize=True, database=None)

# Pieces that make byte soup look enough like ESL to reach deep into the parser.
_TOKENS = st.sampled_from(
    [
        b"Content-Length: ",
        b"Content-Type: text/event-plain\n",
        b"Content-Type: command/reply\n",
        b"Content-Type: api/response\n",
        b"Content-Type: text/disconnect-notice\n",
        b"Reply-Text: +OK\n",
        b"Event-Name: CHANNEL_DATA\n",
        b"Unique-ID: x\n",
        b"\n",
        b"\r\n",
        b"\n\n",
        b":",
        b"%",
        b"%2B",
        b"%zz",
        b" ",
        b"0",
        b"12",
        b"99999999999999999999999",
        b"\xff\xfe",
        b"\x00",
    ]
)
_SOUP = st.lists(st.one_of(_TOKENS, st.binary(max_size=40)), max_size=60).map(b"".join)


@st.composite
def _splits(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """``stream`` cut at arbitrary points (possibly inside a multi-byte character or a CRLF)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def _chunked(stream: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    return stream.flatmap(_splits)


def _feed(parser: FrameParser | CommandParser, chunks: list[bytes]) -> tuple[list[object], FrameError | None]:
    """Feed chunk by chunk and take what is complete, as the link does; check the contract each time."""
    out: list[object] = []
    kind = Frame if isinstance(parser, FrameParser) else Command
    take = parser.next_frame if isinstance(parser, FrameParser) else parser.next_command
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while (item := take()) is not None:
                assert isinstance(item, kind)
                out.append(item)
        except FrameError as exc:
            return out, exc
        # Once all that is complete is taken, at most one unfinished frame within the limit is held.
        assert parser.buffered <= parser.max_frame_bytes
    return out, None


@BOUNDED
@given(_chunked(_SOUP))
def test_any_byte_stream_gives_frames_or_a_frame_error_within_the_limit(chunks: list[bytes]) -> None:
    _feed(FrameParser(max_frame_bytes=LIMIT), chunks)


@BOUNDED
@given(_chunked(_SOUP))
def test_any_byte_stream_gives_commands_or_a_frame_error_within_the_limit(chunks: list[bytes]) -> None:
    _feed(CommandParser(max_frame_bytes=LIMIT), chunks)


_NAMES = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12
)
# Any text but NUL (which encode refuses); FreeSWITCH URL-encodes everything that could break a line.
_VALUES = st.text(
    alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), min_size=1, max_size=30
)


@st.composite
def _wire_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event", "reply", "api", "notice"]))
    if kind == "event":
        headers = draw(
            st.lists(st.tuples(_NAMES, _VALUES), min_size=1, max_size=5).filter(
                lambda pairs: all(name.lower() != "content-length" for name, _ in pairs)
            )
        )
        return encode_event_plain(headers, draw(st.binary(max_size=40)))
    if kind == "reply":
        return encode_reply(draw(st.sampled_from(["+OK", "+OK bye", "-ERR invalid session id [x]"])))
    if kind == "api":
        return encode_api_response(draw(st.binary(max_size=60)))
    return encode_disconnect_notice("7f4de4bc-9c5c-4e4b-9d25-5f1e2c8a0c11", "disconnect", None, b"bye\n")


_VALID = st.lists(_wire_frame(), min_size=1, max_size=6)


@BOUNDED
@given(_VALID.flatmap(lambda frames: st.tuples(st.just(frames), _splits(b"".join(frames)))))
def test_valid_frames_split_anywhere_give_the_same_frames(case: tuple[list[bytes], list[bytes]]) -> None:
    frames, chunks = case
    whole = [f for wire in frames for f in FrameParser().frames(wire)]
    out, error = _feed(FrameParser(max_frame_bytes=64 * 1024), chunks)
    assert error is None
    assert out == whole
    assert len(out) == len(frames)


@BOUNDED
@given(_VALID, _SOUP, st.data())
def test_valid_frames_then_garbage_give_those_frames_first(
    frames: list[bytes], garbage: bytes, data: st.DataObject
) -> None:
    chunks = data.draw(_splits(b"".join(frames) + garbage))
    out, _ = _feed(FrameParser(max_frame_bytes=64 * 1024), chunks)
    expected = [f for wire in frames for f in FrameParser().frames(wire)]
    assert out[: len(expected)] == expected


@BOUNDED
@given(_wire_frame(), st.integers(-50, 50), st.data())
def test_a_wrong_content_length_gives_frames_or_a_frame_error(
    wire: bytes, delta: int, data: st.DataObject
) -> None:
    head, sep, body = wire.partition(b"\n\n")
    lines = head.split(b"\n")
    lines = [
        b"Content-Length: %d" % max(0, int(line.split(b":")[1]) + delta)
        if line.startswith(b"Content-Length")
        else line
        for line in lines
    ]
    _feed(FrameParser(max_frame_bytes=LIMIT), data.draw(_splits(b"\n".join(lines) + sep + body)))


@BOUNDED
@given(st.integers(LIMIT + 1, LIMIT * 3), st.booleans(), st.data())
def test_a_header_block_over_the_limit_is_a_frame_error_however_it_arrives(
    size: int, ended: bool, data: st.DataObject
) -> None:
    stream = b"X-Huge: " + b"a" * size + (b"\n\n" if ended else b"")
    out, error = _feed(FrameParser(max_frame_bytes=LIMIT), data.draw(_splits(stream)))
    assert out == []
    assert error is not None


@pytest.mark.parametrize("digits", [25, 5000])
def test_a_content_length_with_thousands_of_digits_is_a_frame_error(digits: int) -> None:
    # int() refuses over 4300 digits with a bare ValueError: the parser must say FrameError.
    with pytest.raises(FrameError, match="Content-Length"):
        FrameParser().frames(b"Content-Type: api/response\nContent-Length: " + b"9" * digits + b"\n\n")
    with pytest.raises(FrameError, match="Content-Length"):
        CommandParser().commands(b"api x\nContent-Length: " + b"9" * digits + b"\n\n")


def test_a_content_length_of_many_leading_zeros_is_read_as_its_value() -> None:
    (frame,) = FrameParser().frames(b"Content-Type: api/response\nContent-Length: " + b"0" * 30 + b"2\n\nok")
    assert frame.body == b"ok"


# --- Headers decoded when read agree with headers decoded at once ------------------------------

_HEADER_BYTES = st.lists(
    st.one_of(
        st.sampled_from(
            [b"Event-Name", b"event-name", b"Unique-ID", b"Content-Type", b"Reply-Text", b":", b": ", b" "]
        ),
        st.sampled_from([b"\n", b"\r\n", b"\r", b"%2B", b"%zz", b"%", b"\t", b"\x0b", b"\xc3\xa9", b"\xff"]),
        st.binary(max_size=12),
    ),
    max_size=40,
).map(b"".join)
_LOOKUPS = ["Event-Name", "EVENT-NAME", "Unique-ID", "Content-Type", "Reply-Text", "x", "", "a:b", "\u212a"]


@BOUNDED
@given(block=_HEADER_BYTES, decode_values=st.booleans())
def test_lazy_headers_read_as_the_eager_parse(block: bytes, decode_values: bool) -> None:
    """The same FrameError, or the same value for every lookup and the same pairs."""
    from callcontrol.esl.frames import Headers, _check_header_lines, _header_pairs

    try:
        eager = Headers(_header_pairs(block, decode_values=decode_values))
    except FrameError as exc:
        with pytest.raises(FrameError, match=f"^{re.escape(str(exc))}$"):
            _check_header_lines(block)
        return
    _check_header_lines(block)
    lazy = Headers._lazy(block, decode_values=decode_values)
    # The lower-cased copy a caller already made serves the lookups the same way.
    given_lowered = Headers._lazy(block, decode_values=decode_values, lowered=block.lower())
    for name in [*_LOOKUPS, *eager]:
        assert lazy.get(name) == eager.get(name), name
        assert given_lowered.get(name) == eager.get(name), name
        assert (name in lazy) == (name in eager), name
    assert bool(Headers._lazy(block, decode_values=decode_values)) == bool(eager)
    assert lazy.pairs == eager.pairs
    assert dict(lazy) == dict(eager)
