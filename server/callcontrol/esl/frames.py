"""The Event Socket (ESL) wire format: bytes in, frames out; commands and frames to bytes.

No sockets, threads, gevent or asyncio here (the h11 shape): `FrameParser` and
`CommandParser` only buffer what they are fed, `encode_*` only build bytes. The
outbound link (client side) and the FreeSWITCH simulator (server side) share it.

What the bytes look like (FreeSWITCH 1.10.12, ``mod_event_socket.c``, checked
against the captured transcripts):

* A frame is a header block (``Name: value`` lines), a blank line, then exactly
  ``Content-Length`` body **bytes**. We split on bytes and decode afterwards, so
  multi-byte UTF-8 split across TCP reads is never a problem.
* Header values are URL-encoded only where FreeSWITCH runs an event through
  ``switch_event_serialize``: the inner headers of ``text/event-plain`` and the
  outbound ``connect`` reply (a serialized ``CHANNEL_DATA`` event that also holds
  ``Content-Type: command/reply`` and ``Reply-Text: %2BOK%0A``). Ordinary
  ``command/reply`` frames, ``api/response`` and ``text/disconnect-notice`` are
  printed raw with ``snprintf``: a literal ``%`` or ``+`` there is data.
* FreeSWITCH's URL encoder (``switch_url_encode``) escapes bytes below 0x20 or
  above 0x7E and ``\\r\\n #%&+:;<=>?@[\\]^`{|}"``, writes upper-case hex, leaves an
  existing ``%XX`` (upper-case hex) alone, and writes an empty value as ``_undef_``
  (which the parser hands back as sent: FreeSWITCH itself does not map it back).

Errors: `FrameError` (malformed input) and `UnsafeValue` (text that would break
out of its line or header if written); both are `ValueError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Generic, Literal, TypeVar

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Command",
    "CommandParser",
    "Event",
    "Frame",
    "FrameError",
    "FrameParser",
    "Headers",
    "UnsafeValue",
    "encode_api_response",
    "encode_auth_request",
    "encode_command",
    "encode_connect_reply",
    "encode_disconnect_notice",
    "encode_event_json",
    "encode_event_plain",
    "encode_event_xml",
    "encode_reply",
    "encode_sendmsg",
    "parse_event_plain",
    "url_decode",
    "url_encode",
]

# Largest frame (header block + body) a parser buffers before it gives up with a FrameError.
# Real events are tens of kB (the largest captured is 9 kB); a peer announcing more is not
# FreeSWITCH, or is broken, and must not pin memory.
DEFAULT_MAX_FRAME_BYTES: Final = 1024 * 1024


class FrameError(ValueError):
    """The bytes are not a well-formed Event Socket frame or command."""


class UnsafeValue(ValueError):
    """Text that would inject a line or a header into a frame if written as is."""


# --- URL encoding as FreeSWITCH does it --------------------------------------------------------

# SWITCH_URL_UNSAFE from src/include/switch_utils.h.
_URL_UNSAFE: Final = frozenset(b'\r\n #%&+:;<=>?@[\\]^`{|}"')
_ENCODED_BYTE: Final = tuple(
    chr(b) if 0x20 <= b <= 0x7E and b not in _URL_UNSAFE else f"%{b:02X}" for b in range(256)
)
_URL_SAFE_TEXT: Final = re.compile(
    "[" + re.escape("".join(chr(b) for b in range(0x20, 0x7F) if b not in _URL_UNSAFE)) + "]*"
)
_UPPER_HEX: Final = frozenset(b"0123456789ABCDEF")
_PERCENT_ESCAPE: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNDEF: Final = "_undef_"


def url_encode(value: str) -> str:
    """Percent-encode ``value`` exactly like ``switch_url_encode`` (no double encoding)."""
    if _URL_SAFE_TEXT.fullmatch(value):
        return value
    raw = value.encode("utf-8")
    out: list[str] = []
    last = len(raw) - 1
    for i, byte in enumerate(raw):
        # An existing %XX with upper-case hex is passed through, as FreeSWITCH does.
        if byte == 0x25 and last - i > 1 and raw[i + 1] in _UPPER_HEX and raw[i + 2] in _UPPER_HEX:
            out.append("%")
        else:
            out.append(_ENCODED_BYTE[byte])
    return "".join(out)


def url_decode(value: bytes) -> str:
    """Undo FreeSWITCH's percent-encoding and decode the bytes as UTF-8 (invalid bytes → U+FFFD)."""
    if b"%" in value:
        value = _PERCENT_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), value)
    return value.decode("utf-8", "replace")


# --- Headers -----------------------------------------------------------------------------------


class Headers(Mapping[str, str]):
    """Read-only header map that keeps every ``Name: value`` line in wire order.

    Lookups ignore case, as FreeSWITCH's own header lookups do, and return the
    first value of a repeated name (``CHANNEL_HANGUP_COMPLETE`` carries
    ``Hangup-Cause`` twice). ``pairs`` keeps duplicates, so a frame re-encodes
    to the same bytes.

    Headers parsed from the wire are decoded only when read (`_lazy`): an event
    carries 50-150 headers and the gateway reads a handful, and decoding them
    all was the largest cost per call. A name is then found in the raw block by
    a search; anything that needs them all (iteration, ``pairs``) decodes them
    all once, exactly as an eager parse would have.
    """

    __slots__ = ("_block", "_cache", "_decode_values", "_index", "_lowered", "_names", "_pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        if isinstance(pairs, Headers):
            items: Iterable[tuple[str, str]] = pairs.pairs
        elif isinstance(pairs, Mapping):
            items = pairs.items()
        else:
            items = pairs
        self._block: bytes | None = None
        self._lowered: bytes | None = None
        self._cache: dict[str, str | None] = {}
        self._decode_values = False
        self._set_pairs(tuple((str(k), str(v)) for k, v in items))

    @classmethod
    def _lazy(cls, block: bytes, *, decode_values: bool, lowered: bytes | None = None) -> Headers:
        """Headers of a checked header block (see `_check_header_lines`), decoded when read.

        ``lowered`` is ``block.lower()`` if the caller has it already.
        """
        if not block.isascii():
            # A name search is byte-wise; str.lower() of non-ASCII names may differ from it.
            return cls(_header_pairs(block, decode_values=decode_values))
        self = cls.__new__(cls)
        self._block = block
        self._lowered = lowered
        self._cache = {}
        self._decode_values = decode_values
        return self

    def _set_pairs(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self._pairs = pairs
        index: dict[str, str] = {}
        names: list[str] = []
        for name, value in pairs:
            key = name.lower()
            if key not in index:
                index[key] = value
                names.append(name)
        self._index = index
        self._names = tuple(names)

    def _materialize(self) -> None:
        if self._block is not None:
            self._set_pairs(tuple(_header_pairs(self._block, decode_values=self._decode_values)))
            self._block = None
            self._lowered = None
            self._cache = {}

    def _find(self, name: str) -> str | None:
        """The first value of ``name`` (any case), or None."""
        if self._block is None:
            return self._index.get(name.lower())
        key = name.lower()
        if key in self._cache:
            return self._cache[key]
        if not _PLAIN_NAME.fullmatch(name):
            self._materialize()
            return self._index.get(key)
        if self._lowered is None:
            self._lowered = self._block.lower()
        raw = _raw_header(self._block, key.encode("ascii"), self._lowered)
        value = None
        if raw is not None:
            value = url_decode(raw) if self._decode_values else raw.decode("utf-8", "replace")
        self._cache[key] = value
        return value

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every header line in wire order, repeated names included."""
        self._materialize()
        return self._pairs

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (any case), in wire order."""
        key = name.lower()
        return [v for k, v in self.pairs if k.lower() == key]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._find(name)
        return default if value is None else value

    def __getitem__(self, name: str) -> str:
        value = self._find(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def __iter__(self) -> Iterator[str]:
        self._materialize()
        return iter(self._names)

    def __len__(self) -> int:
        self._materialize()
        return len(self._names)

    def __bool__(self) -> bool:
        # Without this, truth would be len(), which decodes every header of a lazy block.
        if self._block is not None:
            return bool(self._block.strip(b"\r\n"))  # its lines are checked: any is a header
        return bool(self._names)

    def __hash__(self) -> int:
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"Headers({list(self.pairs)!r})"


# A header name that a byte-wise search finds exactly as a case-insensitive str comparison would.
_PLAIN_NAME: Final = re.compile(r"[!-9;-~]+")


def _raw_header(block: bytes, name: bytes, lowered: bytes | None = None) -> bytes | None:
    """The raw value of the first ``name`` line (ASCII case-insensitive) in a header block.

    ``name`` is lower-case; ``lowered`` is ``block.lower()`` if the caller has it (same offsets:
    bytes.lower() changes ASCII letters only). Found with bytes.find, which is far cheaper than a
    case-insensitive regular expression over a block of 100 lines.
    """
    if lowered is None:
        lowered = block.lower()
    key = name + b":"
    if lowered.startswith(key):
        start = len(key)
    else:
        at = lowered.find(b"\n" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = block.find(b"\n", start)
    value = block[start : end if end >= 0 else len(block)].lstrip(b" ")
    return value[:-1] if value.endswith(b"\r") else value


# Every byte but colon and LF: deleted to leave a block's skeleton (see `_check_header_lines`).
_NOT_COLON_OR_LF: Final = bytes(b for b in range(256) if b not in b":\n")
# A line that starts with a blank or a colon (a blank name): one pass, not one `in` per byte.
_BLANK_NAME_START: Final = re.compile(rb"\n[ \t\r\x0b\x0c:]")


def _check_header_lines(block: bytes) -> None:
    """Raise FrameError for the first line of ``block`` that `_split_header_line` refuses.

    First a quick test that suffices for a well-formed block, with C-speed byte operations
    (a line-by-line loop costs as much as decoding did): every line holds a colon, and none
    starts with a blank or a colon (so no name is blank). Otherwise the lines one by one.
    """
    skeleton = block.translate(None, _NOT_COLON_OR_LF)
    if (
        skeleton.startswith(b":")
        and not skeleton.endswith(b"\n")
        and b"\n\n" not in skeleton
        and block[0] not in b" \t\r\x0b\x0c:"
        and _BLANK_NAME_START.search(block) is None
    ):
        return
    for raw_line in block.split(b"\n"):
        line = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        if line:
            _split_header_line(line)


def _as_headers(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


# --- Wire messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One FreeSWITCH event: URL-decoded headers and the event's own body."""

    headers: Mapping[str, str]
    # The inner Content-Length body (BACKGROUND_JOB output, for example). The
    # inner Content-Length header itself is framing and is not kept in headers.
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _as_headers(self.headers))

    @property
    def name(self) -> str:
        """``Event-Name`` (empty if missing)."""
        return self.headers.get("Event-Name", "")

    @property
    def unique_id(self) -> str | None:
        """The channel's ``Unique-ID``, if the event is about a channel."""
        return self.headers.get("Unique-ID")

    def get(self, key: str, default: str | None = None) -> str | None:
        """A header value, case-insensitively."""
        return self.headers.get(key, default)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame from FreeSWITCH: headers (decoded as FreeSWITCH meant them) and the body bytes."""

    headers: Mapping[str, str]
    body: bytes = b""
    _event: Event | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _as_headers(self.headers))
        if self.content_type == "text/event-plain":
            object.__setattr__(self, "_event", parse_event_plain(self.body))

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def reply_text(self) -> str | None:
        """``Reply-Text`` of a ``command/reply`` (``"+OK\\n"`` for the outbound connect reply)."""
        return self.headers.get("Reply-Text")

    @property
    def is_ok(self) -> bool:
        """The reply text starts with ``+OK``."""
        return (self.reply_text or "").startswith("+OK")

    @property
    def event(self) -> Event | None:
        """The inner event of a ``text/event-plain`` frame; None for any other frame."""
        return self._event


@dataclass(frozen=True, slots=True)
class Command:
    """One command a client sent to FreeSWITCH: its first line, header lines and optional body."""

    line: str
    headers: Mapping[str, str] = field(default_factory=Headers)
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _as_headers(self.headers))

    @property
    def verb(self) -> str:
        """The first word, lower case (``"sendmsg"``, ``"linger"``, ``"api"``)."""
        return self.line.split(" ", 1)[0].lower()

    @property
    def argument(self) -> str:
        """Everything after the first word (``"3"`` for ``linger 3``)."""
        parts = self.line.split(" ", 1)
        return parts[1].strip(" ") if len(parts) > 1 else ""


# --- Parsing -----------------------------------------------------------------------------------

_FRAME_HEAD_END: Final = re.compile(rb"\n\r?\n")
# FreeSWITCH's reader ends a command at two LFs with only CRs between them.
_COMMAND_HEAD_END: Final = re.compile(rb"\n\r*\n")
_LINE_BREAKS: Final = re.compile(rb"[\r\n]+")
_DIGITS: Final = re.compile(rb"[0-9]+")


def _split_header_line(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if not sep or not name.strip():
        raise FrameError(f"not a header line: {line[:80]!r}")
    return name, value.lstrip(b" ")


def _header_pairs(block: bytes, *, decode_values: bool) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for raw_line in block.split(b"\n"):
        line = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        if not line:
            continue
        name, value = _split_header_line(line)
        text = url_decode(value) if decode_values else value.decode("utf-8", "replace")
        pairs.append((name.decode("utf-8", "replace"), text))
    return pairs


def _checked_content_length(stripped: bytes, value: str | bytes, limit: int) -> int:
    # ``stripped`` is what must be all ASCII digits; ``value`` is what int() reads and errors show.
    if not _DIGITS.fullmatch(stripped):
        raise FrameError(f"bad Content-Length: {value[:40]!r}")
    # int() refuses more than 4300 digits with a plain ValueError; no real length has 20.
    digits = stripped.lstrip(b"0")
    if len(digits) > 20:
        raise FrameError(f"Content-Length of {len(digits)} digits is over the {limit}-byte limit")
    length = int(digits or b"0")
    if length > limit:
        raise FrameError(f"Content-Length {length} is over the {limit}-byte limit")
    return length


def _content_length(pairs: Iterable[tuple[str, str]], limit: int) -> int | None:
    for name, value in pairs:
        if name.lower() == "content-length":
            return _checked_content_length(value.strip().encode(), value, limit)
    return None


def parse_event_plain(body: bytes) -> Event:
    """Parse the body of a ``text/event-plain`` frame (URL-encoded headers, optional inner body)."""
    match = _FRAME_HEAD_END.search(body)
    block, rest = (body[: match.start()], body[match.end() :]) if match else (body, b"")
    lowered = block.lower()  # one copy for the length lookup here and every later one
    if _raw_header(block, b"content-length", lowered) is None:
        # The common case: no inner body, headers decoded when read.
        _check_header_lines(block)
        return Event(Headers._lazy(block, decode_values=True, lowered=lowered), b"")
    pairs = _header_pairs(block, decode_values=True)
    # The inner body lies inside this one: a longer length is a lie, however it is written.
    length = _content_length(pairs, len(body))
    if length is None:
        return Event(Headers(pairs), b"")
    if length > len(rest):
        raise FrameError(f"event body is {len(rest)} bytes, its Content-Length says {length}")
    headers = [(k, v) for k, v in pairs if k.lower() != "content-length"]
    return Event(Headers(headers), rest[:length])


_Meta = TypeVar("_Meta")
_Out = TypeVar("_Out")


class _LengthFramedReader(Generic[_Meta, _Out]):
    """The buffering both parsers share: a header block up to a blank line, then a length-framed body.

    A subclass says where a header block ends (`_HEAD_END`, `_resume_from`),
    what its header block means (`_parse_head`) and what to return (`_build`).

    Memory is bounded: a frame (header block and body) longer than
    ``max_frame_bytes`` is a `FrameError` as soon as that is known (an
    announced length at once, an endless header block once it passes the
    limit), so after any call that returns, at most one unfinished frame of at
    most ``max_frame_bytes`` is buffered.
    """

    # Ends a header block; searched for in the buffer from ``_scan_from``.
    _HEAD_END: ClassVar[re.Pattern[bytes]]
    # What a header block is called in the size-limit errors.
    _HEAD_NAME: ClassVar[str]

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self._buffer = bytearray()
        self._scan_from = 0
        self._max_frame_bytes = max_frame_bytes
        # Parsed header block whose body has not fully arrived yet: (meta, body start, body length).
        self._pending: tuple[_Meta, int, int] | None = None

    @property
    def max_frame_bytes(self) -> int:
        return self._max_frame_bytes

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def _drain(self, data: bytes) -> list[_Out]:
        self.feed(data)
        out: list[_Out] = []
        while (item := self._next()) is not None:
            out.append(item)
        return out

    def _next(self) -> _Out | None:
        if self._pending is None:
            head = self._read_head()
            if head is None:
                return None
            self._pending = head
        meta, body_start, length = self._pending
        if len(self._buffer) < body_start + length:
            return None
        body = bytes(self._buffer[body_start : body_start + length])
        del self._buffer[: body_start + length]
        self._pending = None
        self._scan_from = 0
        return self._build(meta, body)

    def _read_head(self) -> tuple[_Meta, int, int] | None:
        # Leading CR/LF are skipped (FreeSWITCH never sends blank lines between frames; tolerate them).
        skip = 0
        while skip < len(self._buffer) and self._buffer[skip] in b"\r\n":
            skip += 1
        if skip:
            del self._buffer[:skip]
            self._scan_from = 0
        limit = self._max_frame_bytes
        match = self._HEAD_END.search(self._buffer, self._scan_from)
        if match is None:
            if len(self._buffer) > limit:
                raise FrameError(f"no end of {self._HEAD_NAME} within the {limit}-byte frame limit")
            self._scan_from = self._resume_from()
            return None
        if match.end() > limit:
            raise FrameError(f"{self._HEAD_NAME} longer than the {limit}-byte frame limit")
        meta, length = self._parse_head(bytes(self._buffer[: match.start()]), limit - match.end())
        return meta, match.end(), length

    def _resume_from(self) -> int:
        """Where the next `_HEAD_END` search starts after one that found nothing."""
        raise NotImplementedError

    def _parse_head(self, block: bytes, max_body: int) -> tuple[_Meta, int]:
        """The parsed header block (without its end) and its body length (at most ``max_body``)."""
        raise NotImplementedError

    def _build(self, meta: _Meta, body: bytes) -> _Out:
        raise NotImplementedError


class FrameParser(_LengthFramedReader[bytes, Frame]):
    """Client-side parser of what FreeSWITCH sends: feed bytes, take frames.

    ``next_frame()`` returns None until a whole frame is buffered. It survives
    frames split at any byte and many frames in one chunk. After a
    `FrameError` the stream cannot be trusted; close the connection.
    """

    _HEAD_END = _FRAME_HEAD_END
    _HEAD_NAME = "header block"

    def frames(self, data: bytes = b"") -> list[Frame]:
        """Feed ``data`` and return every complete frame."""
        return self._drain(data)

    def next_frame(self) -> Frame | None:
        return self._next()

    def _resume_from(self) -> int:
        # The end (at most 3 bytes) may have begun in the last 2 bytes.
        return max(0, len(self._buffer) - 2)

    def _parse_head(self, block: bytes, max_body: int) -> tuple[bytes, int]:
        _check_header_lines(block)
        length = _raw_header(block, b"content-length")
        return block, 0 if length is None else _checked_content_length(length.strip(), length, max_body)

    def _build(self, meta: bytes, body: bytes) -> Frame:
        # A command/reply that is a serialized event (the outbound connect
        # reply: CHANNEL_DATA + Reply-Text %2BOK%0A) is URL-encoded throughout;
        # every other outer header block is printed raw by mod_event_socket.
        serialized_event = _raw_header(meta, b"content-type") == b"command/reply" and (
            meta.startswith(b"Event-Name:") or b"\nEvent-Name:" in meta
        )
        return Frame(Headers._lazy(meta, decode_values=serialized_event), body)


class CommandParser(_LengthFramedReader[tuple[str, list[tuple[str, str]]], Command]):
    """Server-side parser of what a client sends to FreeSWITCH (used by the simulator).

    Mirrors ``read_packet`` in mod_event_socket.c: leading CR/LF are skipped, a
    command ends at two LFs, lines split on CR or LF, the first line is the
    command, the others ``name: value`` headers (raw, not URL-decoded), and a
    ``Content-Length`` header is followed by that many body bytes.
    """

    _HEAD_END = _COMMAND_HEAD_END
    _HEAD_NAME = "command"

    def commands(self, data: bytes = b"") -> list[Command]:
        """Feed ``data`` and return every complete command."""
        return self._drain(data)

    def next_command(self) -> Command | None:
        return self._next()

    def _resume_from(self) -> int:
        # Rescan the trailing CR/LF run next time: it may be the start of the end.
        return len(self._buffer.rstrip(b"\r\n"))

    def _parse_head(self, block: bytes, max_body: int) -> tuple[tuple[str, list[tuple[str, str]]], int]:
        lines = _LINE_BREAKS.split(block)
        first = lines[0].decode("utf-8", "replace")
        pairs: list[tuple[str, str]] = []
        for raw in lines[1:]:
            if raw:
                name, value = _split_header_line(raw)
                pairs.append((name.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
        return (first, pairs), _content_length(pairs, max_body) or 0

    def _build(self, meta: tuple[str, list[tuple[str, str]]], body: bytes) -> Command:
        line, pairs = meta
        return Command(line, Headers(pairs), body)


# --- Encoding: checks --------------------------------------------------------------------------

_LINE_BREAKING: Final = ("\r", "\n", "\0")
_NAME_BREAKING: Final = ("\r", "\n", "\0", ":", " ", "\t")


def _check_text(value: str, what: str) -> str:
    for bad in _LINE_BREAKING:
        if bad in value:
            raise UnsafeValue(f"{what} contains {bad!r}: {value[:60]!r}")
    return value


def _check_name(name: str) -> str:
    if not name:
        raise UnsafeValue("empty header name")
    for bad in _NAME_BREAKING:
        if bad in name:
            raise UnsafeValue(f"header name contains {bad!r}: {name[:60]!r}")
    return name


def _check_framing_name(name: str) -> str:
    _check_name(name)
    if name.lower() == "content-length":
        raise UnsafeValue("Content-Length is written from the body, not passed as a header")
    return name


def _raw_lines(headers: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{_check_framing_name(n)}: {_check_text(v, n)}\n" for n, v in headers)


# --- Encoding: client → FreeSWITCH -------------------------------------------------------------


def encode_command(line: str, headers: Sequence[tuple[str, str]] = (), *, body: bytes = b"") -> bytes:
    """A command (``connect``, ``myevents``, ``linger 3``, ``exit``, ``api ...``) and its blank line.

    Optional header lines (``bgapi`` takes ``Job-UUID``) are written raw, as
    FreeSWITCH reads them; a body gets its ``Content-Length``.
    """
    if not line.strip():
        raise UnsafeValue("empty command")
    text = _check_text(line, "command") + "\n" + _raw_lines(headers)
    if body:
        text += f"Content-Length: {len(body)}\n"
    return (text + "\n").encode("utf-8") + body


def encode_sendmsg(
    headers: Sequence[tuple[str, str]], uuid: str | None = None, *, body: bytes = b""
) -> bytes:
    """A ``sendmsg`` (to the socket's own channel when ``uuid`` is None) with its header lines."""
    if uuid is None:
        return encode_command("sendmsg", headers, body=body)
    if not uuid or any(c.isspace() for c in uuid) or "\0" in uuid:
        raise UnsafeValue(f"bad sendmsg uuid: {uuid[:60]!r}")
    return encode_command(f"sendmsg {uuid}", headers, body=body)


# --- Encoding: FreeSWITCH → client (for the simulator) -----------------------------------------


def _serialize_event(headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """Like ``switch_event_serialize(..., SWITCH_TRUE)``: URL-encoded values, inner body last."""
    lines: list[str] = []
    for name, value in headers:
        _check_framing_name(name)
        if "\0" in value:
            raise UnsafeValue(f"{name} contains a NUL byte")
        lines.append(f"{name}: {url_encode(value) or _UNDEF}\n")
    text = "".join(lines).encode("utf-8")
    if body:
        return text + f"Content-Length: {len(body)}\n\n".encode() + body
    return text + b"\n"


def encode_reply(reply_text: str, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """A ``command/reply``: Content-Type first, then Reply-Text, then any extra headers (raw)."""
    text = f"Content-Type: command/reply\nReply-Text: {_check_text(reply_text, 'Reply-Text')}\n"
    return (text + _raw_lines(extra) + "\n").encode("utf-8")


def encode_connect_reply(
    channel_headers: Sequence[tuple[str, str]], *, socket_mode: str = "async", control: str = "full"
) -> bytes:
    """The outbound ``connect`` reply: one URL-encoded header block of channel data, then reply headers."""
    return _serialize_event(
        [
            *channel_headers,
            ("Content-Type", "command/reply"),
            ("Reply-Text", "+OK\n"),
            ("Socket-Mode", socket_mode),
            ("Control", control),
        ]
    )


def _event_frame(kind: str, payload: bytes) -> bytes:
    # mod_event_socket puts Content-Length first for events (api/response does the opposite).
    return f"Content-Length: {len(payload)}\nContent-Type: text/event-{kind}\n\n".encode() + payload


def encode_event_plain(headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    """A ``text/event-plain`` frame; inner values are URL-encoded as FreeSWITCH encodes them."""
    return _event_frame("plain", _serialize_event(headers, body))


def encode_event_json(body: bytes) -> bytes:
    """A ``text/event-json`` frame around an already serialized JSON event."""
    return _event_frame("json", body)


def encode_event_xml(body: bytes) -> bytes:
    """A ``text/event-xml`` frame around an already serialized XML event."""
    return _event_frame("xml", body)


def encode_api_response(body: bytes) -> bytes:
    """An ``api/response`` (Content-Type first, then Content-Length)."""
    return f"Content-Type: api/response\nContent-Length: {len(body)}\n\n".encode() + body


def encode_auth_request() -> bytes:
    """What an inbound connection gets first."""
    return b"Content-Type: auth/request\n\n"


def encode_disconnect_notice(
    session_uuid: str | None,
    disposition: Literal["disconnect", "linger"] = "disconnect",
    linger_time: int | None = None,
    body: bytes = b"",
    *,
    channel_name: str | None = None,
) -> bytes:
    """A ``text/disconnect-notice`` (raw headers, as ``send_disconnect`` and the linger path print them).

    ``disconnect`` with a session: Controlled-Session-UUID, Content-Disposition,
    Content-Length, body. Without a session (inbound): Content-Length and body.
    ``linger``: Controlled-Session-UUID, Content-Disposition, Channel-Name,
    Linger-Time (-1 = no timeout) and Content-Length: 0.
    """
    lines = ["Content-Type: text/disconnect-notice"]
    if disposition == "linger":
        if session_uuid is None or channel_name is None:
            raise ValueError("a linger notice names its session and channel")
        if body:
            raise ValueError("a linger notice has no body")
        lines += [
            f"Controlled-Session-UUID: {_check_text(session_uuid, 'Controlled-Session-UUID')}",
            "Content-Disposition: linger",
            f"Channel-Name: {_check_text(channel_name, 'Channel-Name')}",
            f"Linger-Time: {-1 if linger_time is None else int(linger_time)}",
        ]
    elif disposition == "disconnect":
        if session_uuid is not None:
            lines += [
                f"Controlled-Session-UUID: {_check_text(session_uuid, 'Controlled-Session-UUID')}",
                "Content-Disposition: disconnect",
            ]
    else:
        raise ValueError(f"unknown disposition {disposition!r}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8") + body
