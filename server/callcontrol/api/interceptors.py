"""The one interceptor every RPC passes: request id, limits, authentication, error mapping,
metrics.

Handlers are wrapped (not just pre-checked) so the caller's identity and the
request id live in context variables for exactly the handler's run, and every
``GatewayError`` a handler raises becomes its gRPC status here and nowhere else.
Transcoded REST requests pass here too, so the RPC metrics cover both.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from callcontrol.api.auth import Authenticator
from callcontrol.api.client_address import FORWARDED_FOR, client_address
from callcontrol.api.decoding import Undecodable, lenient
from callcontrol.api.identity import request_id, set_current_app
from callcontrol.api.ratelimit import AuthFailureLimiter, Limiter
from callcontrol.api.status import Relayed, to_status
from callcontrol.errors import GatewayError, Unauthenticated
from callcontrol.metrics import RpcMetrics

log = logging.getLogger(__name__)

# Infrastructure services answer without application credentials.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        limiter: Limiter | None = None,
        metrics: RpcMetrics | None = None,
        auth_failures: AuthFailureLimiter | None = None,
        forwarded: Callable[[Mapping[str, str]], bool] | None = None,
    ) -> None:
        self._auth = authenticator
        self._limiter = limiter
        # Cluster mode: a request another replica forwarded was counted there.
        self._forwarded = forwarded
        self._metrics = metrics or RpcMetrics(CollectorRegistry())
        self._auth_failures = auth_failures

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_SERVICES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                # grpc.aio streaming handlers are async generators; the stubs say Iterator.
                self._wrap_stream(method, handler.unary_stream),  # type: ignore[arg-type]
                request_deserializer=lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _enter(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        md = _metadata(context)
        # The caller's id is kept when it is a plain token (Envoy's, or a client's
        # own); anything else is replaced, so no client text lands in every log line.
        given = md.get("x-request-id", "")
        request_id.set(given if _REQUEST_ID.fullmatch(given) else str(uuid.uuid4()))
        # Failed authentications are limited per client address, checked before the
        # key so an address over its allowance learns nothing from its guesses. The
        # application's own budget is spent only once the caller has proved its key.
        address = client_address(context.peer(), md.get(FORWARDED_FOR))
        if self._auth_failures is not None:
            self._auth_failures.check(address)
        try:
            app = self._auth.authenticate(md.get("x-app-id"), md.get("x-api-key"))
        except Unauthenticated:
            if self._auth_failures is not None:
                self._auth_failures.failed(address)
            raise
        set_current_app(app)
        if self._limiter is not None and not (self._forwarded is not None and self._forwarded(md)):
            await self._limiter.acquire(app.app_id, method)
        log.info("%s by %s (request %s)", method, app.app_id, request_id.get())

    async def _fail(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], exc: GatewayError
    ) -> None:
        log.info("%s refused: %s (request %s)", method, exc.message, request_id.get())
        await context.abort_with_status(to_status(exc))

    def _started(self, method: str, kind: str) -> float:
        self._metrics.started(method, kind)
        return time.perf_counter()

    def _handled(
        self,
        method: str,
        kind: str,
        context: grpc.aio.ServicerContext[Any, Any],
        outcome: BaseException | None,
        started: float,
    ) -> None:
        self._metrics.handled(method, kind, _status_code(context, outcome), time.perf_counter() - started)

    def _wrap_unary(self, method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._started(method, "unary")
            outcome: BaseException | None = None
            try:
                await self._enter(method, context)
                if isinstance(request, Undecodable):
                    raise request.error()
                return await inner(request, context)
            except GatewayError as exc:
                outcome = exc
                await self._fail(method, context, exc)
                raise AssertionError("unreachable: abort raises") from exc
            except Relayed as exc:
                outcome = exc
                await context.abort_with_status(exc.status)
                raise AssertionError("unreachable: abort raises") from exc
            except BaseException as exc:
                outcome = exc
                raise
            finally:
                self._handled(method, "unary", context, outcome, started)

        return unary

    def _wrap_stream(
        self, method: str, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = self._started(method, "server_stream")
            outcome: BaseException | None = None
            try:
                await self._enter(method, context)
                if isinstance(request, Undecodable):
                    raise request.error()
                async for item in inner(request, context):
                    yield item
            except GatewayError as exc:
                outcome = exc
                await self._fail(method, context, exc)
            except Relayed as exc:
                outcome = exc
                await context.abort_with_status(exc.status)
            except BaseException as exc:
                outcome = exc
                raise
            finally:
                self._handled(method, "server_stream", context, outcome, started)

        return stream


def _status_code(
    context: grpc.aio.ServicerContext[Any, Any], outcome: BaseException | None
) -> grpc.StatusCode:
    """The status the RPC ended with, as the client sees it."""
    if isinstance(outcome, GatewayError):
        return to_status(outcome).code
    if isinstance(outcome, Relayed):
        return outcome.status.code
    if isinstance(outcome, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED  # the client went away
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if outcome is None else grpc.StatusCode.UNKNOWN
