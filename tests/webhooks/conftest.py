"""Webhook test kit: a scriptable receiver on loopback, configs, events, a running service."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from callcontrol.config import Application, GatewayConfig, WebhookConfig, hash_api_key
from callcontrol.events import CallAnswered, CallHangup, CallInitiated, CommandResult
from callcontrol.webhooks import RetryPolicy, WebhookService

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM="

# Retries in milliseconds, so tests wait for state, not for backoff.
FAST_RETRY = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05)


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


Behaviour = Callable[[Received], Awaitable[web.StreamResponse]]


async def accept(_: Received) -> web.StreamResponse:
    return web.Response(status=204)


def respond(status: int, headers: dict[str, str] | None = None) -> Behaviour:
    async def behaviour(_: Received) -> web.StreamResponse:
        return web.Response(status=status, headers=headers)

    return behaviour


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1; ``behaviour`` decides each answer."""

    behaviour: Behaviour = accept
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        # Handlers are cancelled when the client gives up (a timeout), and a
        # test's hanging handlers do not hold cleanup for long.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            {k.lower(): v for k, v in request.headers.items()}, await request.read(), time.monotonic()
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
        try:
            return await self.behaviour(received)
        finally:
            self.in_flight -= 1

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Until ``predicate()`` holds after some request arrived; fails after ``within`` seconds."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_for_count(self, count: int, within: float = 5.0) -> list[Received]:
        await self.wait_for(lambda: len(self.requests) >= count, within)
        return self.requests

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.requests]


async def eventually(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Wait for state the test cannot subscribe to (the outbox, metrics), with a deadline."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.005)


def app(app_id: str, url: str, *secrets: str) -> Application:
    return Application(app_id, hash_api_key(f"key-of-{app_id}"), url, secrets or (SECRET_A,))


def hook_config(
    *apps: Application,
    outbox_path: str = ":memory:",
    request_timeout_s: float = 2.0,
    max_attempts: int = 5,
    max_age_s: float = 3600.0,
    concurrency: int = 4,
) -> GatewayConfig:
    return GatewayConfig(
        webhooks=WebhookConfig(
            outbox_path=outbox_path,
            request_timeout_s=request_timeout_s,
            max_attempts=max_attempts,
            max_age_s=max_age_s,
            per_destination_concurrency=concurrency,
        ),
        applications=apps,
    )


@asynccontextmanager
async def running(service: WebhookService, grace: float = 1.0) -> AsyncIterator[WebhookService]:
    """Run the service for the block; shut it down and close it after."""
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        await service.shutdown(grace)
        await task
        service.close()


def session_id() -> str:
    return str(uuid.uuid4())


def initiated(app_id: str, session: str, **kw: Any) -> CallInitiated:
    return CallInitiated(
        app_id=app_id,
        session_id=session,
        caller_number=kw.pop("caller_number", "+15551230001"),
        destination_number=kw.pop("destination_number", "+15559870002"),
        direction=kw.pop("direction", "inbound"),
        **kw,
    )


def answered(app_id: str, session: str, **kw: Any) -> CallAnswered:
    return CallAnswered(app_id=app_id, session_id=session, **kw)


def hangup(app_id: str, session: str, **kw: Any) -> CallHangup:
    return CallHangup(app_id=app_id, session_id=session, cause=kw.pop("cause", "NORMAL_CLEARING"), **kw)


def command_result(app_id: str, session: str, **kw: Any) -> CommandResult:
    return CommandResult(
        app_id=app_id,
        session_id=session,
        operation_id=kw.pop("operation_id", str(uuid.uuid4())),
        command=kw.pop("command", "answer"),
        command_uid=kw.pop("command_uid", "uid-1"),
        status=kw.pop("status", "succeeded"),
        **kw,
    )


RawAnswer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def raw(data: bytes) -> RawAnswer:
    """Write ``data`` as the whole answer, then hang up."""

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return answer


@dataclass
class RawReceiver:
    """A TCP server on 127.0.0.1 that answers each request with bytes no HTTP library would send.

    It reads the request head and its ``Content-Length`` body, then lets
    ``answer`` write whatever it likes, then closes the connection.
    """

    answer: RawAnswer
    requests: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hooks"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests += 1
            await self.answer(writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the gateway gave up on us: that is the point of some answers
        finally:
            self._handlers.discard(task)
            writer.close()
