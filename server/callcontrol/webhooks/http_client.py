"""A lean HTTP/1.1 client for webhook POSTs: keep-alive connections per lane.

Why our own instead of aiohttp's ``ClientSession``: a webhook is one small
POST whose only answer is a status (and ``Retry-After``), and aiohttp's
per-request machinery (request and response objects, multidict headers,
payload writers, a timer context, stream readers, tracing) was 40 % of the
gateway's CPU per delivered webhook, more than the socket send itself
(README, Benchmarks). Here a request is one prepared byte string written to a
pooled connection, and the answer is parsed by ``httptools`` (llhttp, the C
parser of Node.js, via the binding uvicorn uses); everything else is a few
attribute updates.

What it keeps of the aiohttp client as the gateway used it: TLS for https
URLs with the default verification (system CAs, host name); one deadline for
the whole attempt (connect, send, the head and the part of the body we read);
connection reuse; no cookies; no redirects followed; no decompression (the
body is counted, never looked at); credentials in the URL sent as Basic
auth; at most ``RESPONSE_BODY_LIMIT`` bytes of body drained for reuse, a
longer or stalled body closing the connection instead.

Each lane has a ``Destination``: its own connections, at most as many as it
has attempts in flight, so two applications on one URL never share (or wait
for) each other's connections. A reused connection the receiver closed while
it was idle (its keep-alive ran out) fails before any byte of the answer; that
attempt is sent once more on a new connection within the same deadline.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping
from typing import Final

import httptools
from yarl import URL

USER_AGENT: Final = "callcontrol-gateway-webhooks/1"
RESPONSE_BODY_LIMIT: Final = 64 * 1024
# The status line and headers of an answer; aiohttp's limits were 8190 bytes a line, 128 headers.
HEAD_LIMIT: Final = 16 * 1024
MAX_HEADERS: Final = 128
# An idle connection older than this is closed rather than reused (aiohttp's default too).
KEEPALIVE_S: Final = 15.0
_ERROR_LIMIT: Final = 300


def printable(text: str, limit: int = _ERROR_LIMIT) -> str:
    """``text`` with anything but printable ASCII replaced by "?", at most ``limit`` characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


class InvalidResponse(Exception):
    """The receiver answered with something that is not an acceptable HTTP/1.1 response."""


class InvalidURL(Exception):
    """The webhook URL cannot be sent to (no host, a bad port): every attempt fails with this."""


class _Stale(Exception):
    """A connection closed before any byte of the answer came back."""


class _Enough(Exception):
    """More body than we drain, or bytes after the answer: the status stands, the connection goes."""


class Answer:
    """What came back: the status and ``Retry-After`` (as text), or nothing."""

    __slots__ = ("retry_after", "status")

    def __init__(self, status: int, retry_after: str | None) -> None:
        self.status = status
        self.retry_after = retry_after


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._retry_after: str | None = None
        self._head_bytes = 0
        self._headers = 0
        self._header_bytes = 0
        self._body_bytes = 0
        self._head_done = False
        self._stopped_by: Exception | None = None
        self._complete = False
        self._keep_alive = False
        self._got_bytes = False

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._got_bytes = True
        if not self._head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # 101 with Upgrade: the head is complete; what follows is not HTTP.
            self._answer(reuse=False)
            return
        except httptools.HttpParserError as exc:
            # httptools wraps what our callbacks raise; they keep it in _stopped_by.
            stopped_by, self._stopped_by = self._stopped_by, None
            if isinstance(stopped_by, _Enough):
                self._answer(reuse=False)
            else:
                self._fail(stopped_by or InvalidResponse(str(exc) or "malformed response"))
            return
        if self._complete:
            self._answer(reuse=self._keep_alive)
        elif not self._head_done and self._head_bytes > HEAD_LIMIT:
            self._fail(InvalidResponse(f"response head longer than {HEAD_LIMIT} bytes"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._head_done:
            self._answer(reuse=False)  # the status came; the rest of the body does not matter
        elif not self._got_bytes:
            waiter.set_exception(_Stale())
        else:
            waiter.set_exception(InvalidResponse("connection closed in the middle of the response head"))

    # -- httptools callbacks ------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._stop(_Enough())  # a second answer to one request: keep the first, drop the connection

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            self._stop(InvalidResponse(f"more than {MAX_HEADERS} response headers"))
        # Counted here too: a whole head can arrive in one read, parsed before data_received can look.
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > HEAD_LIMIT:
            self._stop(InvalidResponse(f"response head longer than {HEAD_LIMIT} bytes"))
        if len(name) == 11 and name.lower() == b"retry-after":
            # As aiohttp did: UTF-8, undecodable bytes kept as surrogates (parse_retry_after ignores them).
            self._retry_after = value.decode("utf-8", "surrogateescape")

    def _stop(self, reason: Exception) -> None:
        """End parsing from a callback; ``data_received`` acts on ``reason``."""
        self._stopped_by = reason
        raise reason

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > RESPONSE_BODY_LIMIT:
            self._stop(_Enough())

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and self._status != 101:
            self._reset()  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._got_bytes = True  # the request arrived: a close now is no stale connection
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once this returns

    # -- our side ------------------------------------------------------------

    def _answer(self, *, reuse: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self._status, self._retry_after))
        self.reusable = reuse and not self.closed
        if not self.reusable:
            self._close()

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._close()

    def _close(self) -> None:
        self.reusable = False
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _timed_out(self) -> None:
        """The attempt's deadline: a status already read stands, anything less is a timeout."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._head_done:
            self._answer(reuse=False)
        else:
            self._fail(TimeoutError())

    async def exchange(
        self, loop: asyncio.AbstractEventLoop, request: tuple[bytes, bytes], deadline: float
    ) -> Answer:
        """Send ``request`` (head, body); wait for the answer's head (and a small body) by ``deadline``."""
        assert self._transport is not None
        self._reset()
        self.reusable = False
        waiter: asyncio.Future[Answer] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_at(deadline, self._timed_out)
        try:
            self._transport.writelines(request)  # the body is not copied into one buffer
            return await waiter
        except BaseException:
            self._close()  # cancelled, timed out or broken: never reused half-way
            raise
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self._close()


class Destination:
    """One lane's view of one URL: its pool of idle keep-alive connections."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None) -> None:
        self.url = url
        self._idle: list[_Connection] = []
        # A URL that cannot work fails each attempt (recorded, retried, given up), never the lane.
        self._invalid = ""
        try:
            parsed = URL(url)
        except ValueError as exc:
            self._invalid = str(exc)
            return
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            self._invalid = "not an http(s) URL with a host"
            return
        self._host = parsed.raw_host
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._ssl = ssl_context if parsed.scheme == "https" else None
        host_header = parsed.raw_host if ":" not in parsed.raw_host else f"[{parsed.raw_host}]"
        if not parsed.is_default_port():
            host_header += f":{self._port}"
        head = [
            f"POST {parsed.raw_path_qs or '/'} HTTP/1.1",
            f"host: {host_header}",
            "content-type: application/json",
            f"user-agent: {USER_AGENT}",
            "accept-encoding: identity",
        ]
        if parsed.user is not None:
            # As aiohttp did with credentials in the URL: HTTP Basic.
            token = base64.b64encode(f"{parsed.user}:{parsed.password or ''}".encode()).decode()
            head.append(f"authorization: Basic {token}")
        self._head = ("\r\n".join(head) + "\r\n").encode()

    async def post(self, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Answer:
        """One attempt; raises ``TimeoutError``, ``OSError``, ``InvalidResponse`` or ``InvalidURL``."""
        if self._invalid:
            raise InvalidURL(self._invalid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        parts = [self._head]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {printable(name)}: line breaks are not allowed")
            parts.append(f"{name}: {value}\r\n".encode())
        parts.append(b"content-length: %d\r\n\r\n" % len(body))
        request = (b"".join(parts), body)
        while True:
            conn = self._reusable(loop)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(loop, deadline)
            try:
                answer = await conn.exchange(loop, request, deadline)
            except _Stale:
                if reused:
                    continue  # closed while idle: once more, on a fresh one if none is left
                raise ConnectionResetError("connection closed before the response") from None
            if conn.reusable:
                conn.idle_since = loop.time()
                self._idle.append(conn)
            return answer

    def _reusable(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and loop.time() - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        async with asyncio.timeout_at(deadline):
            _, conn = await loop.create_connection(
                _Connection,
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
        return conn

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class WebhookClient:
    """What the lanes share: the TLS context. Each lane gets a ``Destination`` of its own."""

    def __init__(self) -> None:
        self._ssl: ssl.SSLContext | None = None
        self._destinations: list[Destination] = []

    def destination(self, url: str) -> Destination:
        if self._ssl is None and url.startswith("https:"):
            self._ssl = ssl.create_default_context()  # loading the CAs is slow: once, and only for https
        destination = Destination(url, self._ssl)
        self._destinations.append(destination)
        return destination

    async def close(self) -> None:
        for destination in self._destinations:
            destination.close()
        self._destinations.clear()
