"""gRPC to the replica that holds a call: one channel per replica, a deadline, errors kept.

The caller's metadata goes along (the owner authenticates it again: replicas
share the applications) with a marker so a forwarded request is never forwarded
again nor counted twice against the rate limits. The marker is a secret the
replicas share through Redis, so a client cannot claim to be a replica. The
owner's answer, error details included, reaches the caller as if the request
had landed there; failing to reach the owner is UNAVAILABLE with a reason.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import Message

from callcontrol.api.status import Relayed, relayed_status
from callcontrol.errors import Unavailable

log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

FORWARDED_BY = "x-callcontrol-forwarded"
OWNER_UNREACHABLE = "owner_unreachable"
# Set by the gRPC stack; everything else the caller sent is passed on.
_NOT_PASSED = ("user-agent", "content-type", "te", "grpc-", ":")
_STATUS_DETAILS = "grpc-status-details-bin"


def marked(metadata: Mapping[str, str], secret: str) -> bool:
    """Whether a replica sent this request (it carries the cluster's secret)."""
    given = metadata.get(FORWARDED_BY, "")
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class Forwarder:
    def __init__(self, timeout_s: float) -> None:
        #: the cluster's shared secret (``ClusterNode.start`` reads it from Redis)
        self.secret = ""
        self._timeout = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return channel

    def _metadata(self, context: Context) -> tuple[tuple[str, str | bytes], ...]:
        passed = tuple(
            (k, v)
            for k, v in context.invocation_metadata() or ()
            if not k.startswith(_NOT_PASSED) and k != FORWARDED_BY  # a client's own marker is dropped
        )
        return (*passed, (FORWARDED_BY, self.secret))

    async def unary(
        self,
        address: str,
        method: str,
        request: Message,
        response_type: type[Message],
        context: Context,
    ) -> Any:
        call: grpc.aio.UnaryUnaryMultiCallable[Message, Any] = self._channel(address).unary_unary(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        try:
            return await call(request, metadata=self._metadata(context), timeout=self._deadline(context))
        except grpc.aio.AioRpcError as exc:
            raise self._error(address, method, exc) from None

    async def stream(
        self,
        address: str,
        method: str,
        request: Message,
        response_type: type[Message],
        context: Context,
    ) -> AsyncIterator[Any]:
        call: grpc.aio.UnaryStreamMultiCallable[Message, Any] = self._channel(address).unary_stream(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        # A watch lives as long as the caller keeps it: no deadline beyond the caller's own.
        stream = call(request, metadata=self._metadata(context), timeout=context.time_remaining())
        try:
            async for item in stream:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise self._error(address, method, exc) from None
        finally:
            stream.cancel()

    def _deadline(self, context: Context) -> float:
        remaining = context.time_remaining()
        return self._timeout if remaining is None else min(self._timeout, remaining)

    def _error(self, address: str, method: str, exc: grpc.aio.AioRpcError) -> Exception:
        trailing = tuple(exc.trailing_metadata() or ())
        if any(k == _STATUS_DETAILS for k, _ in trailing):
            # The owner's gateway answered: its status, details and all.
            return Relayed(relayed_status(exc.code(), exc.details() or "", trailing))
        log.warning("forwarding %s to %s failed: %s", method, address, exc.code().name)
        return Unavailable(
            f"the replica holding this call did not answer ({exc.code().name})", reason=OWNER_UNREACHABLE
        )

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
