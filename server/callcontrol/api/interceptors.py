"""The one interceptor every RPC passes: request id, limits, authentication, error mapping.

Handlers are wrapped (not just pre-checked) so the caller's identity and the
request id live in context variables for exactly the handler's run, and every
``GatewayError`` a handler raises becomes its gRPC status here and nowhere else.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from callcontrol.api.auth import Authenticator
from callcontrol.api.client_address import FORWARDED_FOR, client_address
from callcontrol.api.decoding import Undecodable, lenient
from callcontrol.api.identity import request_id, set_current_app
from callcontrol.api.ratelimit import AuthFailureLimiter, RateLimiter
from callcontrol.api.status import to_status
from callcontrol.errors import GatewayError, Unauthenticated

log = logging.getLogger(__name__)

# Infrastructure services answer without application credentials.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter | None = None,
        auth_failures: AuthFailureLimiter | None = None,
    ) -> None:
        self._auth = authenticator
        self._limiter = limiter
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

    def _enter(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        md = _metadata(context)
        request_id.set(md.get("x-request-id") or str(uuid.uuid4()))
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
        if self._limiter is not None:
            self._limiter.check(app.app_id, method)
        log.info("%s by %s (request %s)", method, app.app_id, request_id.get())

    async def _fail(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], exc: GatewayError
    ) -> None:
        log.info("%s refused: %s (request %s)", method, exc.message, request_id.get())
        await context.abort_with_status(to_status(exc))

    def _wrap_unary(self, method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                self._enter(method, context)
                if isinstance(request, Undecodable):
                    raise request.error()
                return await inner(request, context)
            except GatewayError as exc:
                await self._fail(method, context, exc)
                raise AssertionError("unreachable: abort raises") from exc

        return unary

    def _wrap_stream(
        self, method: str, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                self._enter(method, context)
                if isinstance(request, Undecodable):
                    raise request.error()
                async for item in inner(request, context):
                    yield item
            except GatewayError as exc:
                await self._fail(method, context, exc)

        return stream
