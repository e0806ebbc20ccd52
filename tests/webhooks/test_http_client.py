"""The lean webhook HTTP client against real sockets: reuse, hostile answers, TLS, limits."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from callcontrol.webhooks.delivery import post_webhook
from callcontrol.webhooks.http_client import (
    HEAD_LIMIT,
    RESPONSE_BODY_LIMIT,
    Destination,
    InvalidResponse,
    WebhookClient,
)

from .conftest import eventually

HEADERS = {"webhook-id": "evt-1", "webhook-timestamp": "1700000000", "webhook-signature": "v1,abc"}
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@dataclass
class Request:
    head: bytes
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None


# Answers one request on a connection: write what you like; return False to hang up after it.
Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


def always(data: bytes, *, keep: bool = True) -> Answer:
    async def answer(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep

    return answer


@dataclass
class Server:
    """A TCP server on 127.0.0.1 reading HTTP requests in a loop, answering each with ``answer``."""

    answer: Answer
    ssl_context: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        assert self._server is not None
        return f"{scheme}://{host}:{self._server.sockets[0].getsockname()[1]}/hooks?x=1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request = Request(head, b"")
                request.body = await reader.readexactly(int(request.header(b"content-length") or 0))
                self.requests.append(request)
                if not await self.answer(request, writer):
                    break
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(answer: Answer, ssl_context: ssl.SSLContext | None = None) -> Server:
        server = Server(answer, ssl_context)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[WebhookClient]:
    client = WebhookClient()
    yield client
    await client.close()


# -- the request and connection reuse ----------------------------------------------


async def test_the_request_is_one_plain_post_with_our_headers_and_body(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(NO_CONTENT))
    answer = await client.destination(server.url()).post(b'{"a":1}', HEADERS, 2.0)
    assert answer.status == 204
    (request,) = server.requests
    assert request.head.startswith(b"POST /hooks?x=1 HTTP/1.1\r\n")
    assert request.header(b"host") == server.url().split("/")[2].encode()
    assert request.header(b"content-type") == b"application/json"
    assert request.header(b"accept-encoding") == b"identity"
    assert request.header(b"webhook-id") == b"evt-1"
    assert request.header(b"cookie") is None
    assert request.header(b"authorization") is None
    assert request.body == b'{"a":1}'


async def test_credentials_in_the_url_are_sent_as_basic_auth(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(NO_CONTENT))
    url = server.url().replace("http://", "http://user:p%40ss@")
    await client.destination(url).post(b"{}", HEADERS, 2.0)
    assert server.requests[0].header(b"authorization") == b"Basic dXNlcjpwQHNz"  # user:p@ss


async def test_a_line_break_in_a_header_value_is_refused_and_nothing_is_sent(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(NO_CONTENT))
    with pytest.raises(ValueError, match="line breaks"):
        await client.destination(server.url()).post(b"{}", {"webhook-id": "a\r\nx-evil: 1"}, 2.0)
    assert server.connections == 0


async def test_keep_alive_reuses_one_connection(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
    destination = client.destination(server.url())
    for _ in range(5):
        assert (await destination.post(b"{}", HEADERS, 2.0)).status == 200
    assert (server.connections, len(server.requests)) == (1, 5)


async def test_a_chunked_answer_is_read_and_the_connection_reused(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\n!!!\r\n0\r\n\r\n"
    server = await serve(always(chunked))
    destination = client.destination(server.url())
    for _ in range(3):
        assert (await destination.post(b"{}", HEADERS, 2.0)).status == 200
    assert server.connections == 1


async def test_connection_close_is_honoured(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", keep=False))
    destination = client.destination(server.url())
    for _ in range(3):
        assert (await destination.post(b"{}", HEADERS, 2.0)).status == 204
    assert (server.connections, len(server.requests)) == (3, 3)


async def test_a_connection_closed_while_idle_is_replaced_without_a_failed_attempt(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    # Keep-alive as far as the headers say, but the receiver hangs up after each answer.
    server = await serve(always(NO_CONTENT, keep=False))
    destination = client.destination(server.url())
    for _ in range(3):
        assert (await destination.post(b"{}", HEADERS, 2.0)).status == 204
    assert len(server.requests) == 3  # each sent once: the stale connection saw nothing
    assert server.connections == 3


async def test_a_reused_connection_that_drops_the_request_unanswered_is_retried_once_on_a_new_one(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    # The keep-alive race: the receiver gives up on an idle connection just as a request goes out.
    async def second_request_on_a_connection_is_dropped(
        request: Request, writer: asyncio.StreamWriter
    ) -> bool:
        served = sum(1 for r in server.requests if r.body == b"first")
        if request.body == b"second" and served == 1 and len(server.requests) == 2:
            return False  # hang up without a byte of answer
        writer.write(NO_CONTENT)
        return True

    server = await serve(second_request_on_a_connection_is_dropped)
    destination = client.destination(server.url())
    assert (await destination.post(b"first", HEADERS, 2.0)).status == 204
    assert (await destination.post(b"second", HEADERS, 2.0)).status == 204
    assert [r.body for r in server.requests] == [b"first", b"second", b"second"]
    assert server.connections == 2


async def test_two_destinations_on_one_url_do_not_share_connections(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(NO_CONTENT))
    first, second = client.destination(server.url()), client.destination(server.url())
    for destination in (first, second, first, second):
        await destination.post(b"{}", HEADERS, 2.0)
    assert server.connections == 2


async def test_concurrent_posts_open_a_connection_each_then_reuse_them(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    gate = asyncio.Event()

    async def held(_: Request, writer: asyncio.StreamWriter) -> bool:
        await gate.wait()
        writer.write(NO_CONTENT)
        return True

    server = await serve(held)
    destination = client.destination(server.url())
    posts = [asyncio.create_task(destination.post(b"{}", HEADERS, 5.0)) for _ in range(4)]
    await eventually(lambda: len(server.requests) == 4, what="4 requests held")
    gate.set()
    assert [a.status for a in await asyncio.gather(*posts)] == [204] * 4
    await asyncio.gather(*(destination.post(b"{}", HEADERS, 5.0) for _ in range(4)))
    assert server.connections == 4


# -- what a receiver answers --------------------------------------------------------


async def test_retry_after_and_interim_answers(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    server = await serve(always(answer))
    result = await client.destination(server.url()).post(b"{}", HEADERS, 2.0)
    assert (result.status, result.retry_after) == (503, "7")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"HTTP/1.1 2000 \xff\x1b[31mOK\r\n\r\n", "", id="garbage-status-line"),
        pytest.param(b"\x00\x01 not http\r\n\r\n", "", id="garbage"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * HEAD_LIMIT + b"\r\n\r\n", "head longer", id="huge-header"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
            "more than",
            id="too-many-headers",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "", id="bad-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n", "middle of the response head", id="closed-mid-head"),
    ],
)
async def test_a_broken_answer_is_an_invalid_response(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient, data: bytes, message: str
) -> None:
    server = await serve(always(data, keep=False))
    with pytest.raises(InvalidResponse, match=message or None):
        await client.destination(server.url()).post(b"{}", HEADERS, 2.0)


async def test_a_head_trickled_past_the_limit_is_refused_before_the_deadline(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    async def trickle(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        while True:
            writer.write(b"a" * 1024)
            await writer.drain()
            await asyncio.sleep(0.001)

    server = await serve(trickle)
    with pytest.raises(InvalidResponse, match="head longer"):
        await client.destination(server.url()).post(b"{}", HEADERS, 30.0)


async def test_a_second_answer_to_one_request_keeps_the_first_and_drops_the_connection(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(NO_CONTENT + b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"))
    destination = client.destination(server.url())
    assert (await destination.post(b"{}", HEADERS, 2.0)).status == 204
    assert (await destination.post(b"{}", HEADERS, 2.0)).status == 204
    assert server.connections == 2


async def test_closed_before_any_answer_on_a_new_connection_is_a_connection_error(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    server = await serve(always(b"", keep=False))
    with pytest.raises(ConnectionResetError):
        await client.destination(server.url()).post(b"{}", HEADERS, 2.0)
    assert len(server.requests) == 1  # not sent twice: only a reused connection is retried


async def test_no_answer_within_the_deadline_is_a_timeout(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    async def never(_: Request, __: asyncio.StreamWriter) -> bool:
        await asyncio.Event().wait()
        return False

    server = await serve(never)
    result = await post_webhook(client.destination(server.url()), b"{}", HEADERS, 0.2)
    assert (result.status_code, result.error) == (None, "timeout after 0.2 s")


async def test_a_status_then_a_stalled_or_huge_body_keeps_the_status_and_drops_the_connection(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    async def stalled(request: Request, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            await asyncio.Event().wait()
        big = RESPONSE_BODY_LIMIT * 4
        writer.write(b"HTTP/1.1 202 OK\r\nContent-Length: %d\r\n\r\n" % big + bytes(big))
        await writer.drain()
        return True

    server = await serve(stalled)
    destination = client.destination(server.url())
    assert (await destination.post(b"{}", HEADERS, 0.3)).status == 200
    assert (await destination.post(b"{}", HEADERS, 2.0)).status == 202
    assert (await destination.post(b"{}", HEADERS, 2.0)).status == 202
    assert server.connections == 3  # neither answer left its connection reusable


async def test_a_refused_connection_is_a_sanitised_error(client: WebhookClient) -> None:
    result = await post_webhook(client.destination("http://127.0.0.1:9/hooks"), b"{}", HEADERS, 1.0)
    assert result.status_code is None
    assert result.error.startswith("ConnectionRefusedError")
    assert all(" " <= c <= "~" for c in result.error)


async def test_a_cancelled_attempt_never_leaves_its_connection_for_reuse(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient
) -> None:
    async def first_never(_: Request, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 1:
            await asyncio.Event().wait()
        writer.write(NO_CONTENT)
        return True

    server = await serve(first_never)
    destination = client.destination(server.url())
    attempt = asyncio.create_task(destination.post(b"{}", HEADERS, 5.0))
    await eventually(lambda: bool(server.requests), what="the request held")
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert (await destination.post(b"{}", HEADERS, 2.0)).status == 204
    assert server.connections == 2


# -- TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_https_is_verified_against_the_default_trust_store(
    serve: Callable[..., Awaitable[Server]], client: WebhookClient, ca: trustme.CA
) -> None:
    server = await serve(always(NO_CONTENT), _server_context(ca))
    result = await post_webhook(client.destination(server.url(scheme="https")), b"{}", HEADERS, 2.0)
    assert result.status_code is None
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert server.requests == []


async def test_https_with_a_trusted_certificate_posts_and_reuses(
    serve: Callable[..., Awaitable[Server]], ca: trustme.CA
) -> None:
    server = await serve(always(NO_CONTENT), _server_context(ca))
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    destination = Destination(server.url(host="localhost", scheme="https"), trust)
    try:
        for _ in range(2):
            assert (await destination.post(b"{}", HEADERS, 2.0)).status == 204
    finally:
        destination.close()
    assert (server.connections, len(server.requests)) == (1, 2)


async def test_https_checks_the_host_name(serve: Callable[..., Awaitable[Server]], ca: trustme.CA) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(context)
    server = await serve(always(NO_CONTENT), context)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    destination = Destination(server.url(host="localhost", scheme="https"), trust)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await destination.post(b"{}", HEADERS, 2.0)
    finally:
        destination.close()
