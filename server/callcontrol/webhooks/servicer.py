"""The ``Deliveries`` gRPC service: read and redeliver the caller's own webhooks.

Thin: check the request, ask the ``WebhookService``, convert. A delivery of
another application does not exist for the caller (NotFound), like sessions
and operations. Errors are raised as ``callcontrol.errors`` types; the API
interceptor maps them to status codes.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import grpc  # type: ignore[import-untyped, unused-ignore]  # types-grpcio not yet a dev dependency
from google.protobuf.timestamp_pb2 import Timestamp

from callcontrol import validation
from callcontrol.api.identity import current_app
from callcontrol.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Unavailable
from callcontrol.v1 import deliveries_pb2 as pb
from callcontrol.v1 import deliveries_pb2_grpc as pb_grpc
from callcontrol.webhooks.outbox import DeliveryRecord, DeliveryStatus, OutboxError
from callcontrol.webhooks.service import RedeliverRefused, WebhookService

_MAX_ID_LENGTH = 128
log = logging.getLogger(__name__)


def _timestamp(unix: float | None) -> Timestamp | None:
    if unix is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(round(unix * 1e9))
    return stamp


def delivery_message(record: DeliveryRecord, *, detail: bool = False) -> pb.Delivery:
    message = pb.Delivery(
        delivery_id=record.event_id,
        event_type=record.event_type,
        session_id=record.session_id,
        status=record.status.value,
        created_at=_timestamp(record.created_at),
        attempt_count=record.attempt_count,
        next_attempt_at=_timestamp(record.next_attempt_at),
        finished_at=_timestamp(record.finished_at),
        last_error=record.last_error,
        last_status_code=record.last_status_code or 0,
    )
    if detail:
        message.body = record.body.decode()
        message.attempts.extend(
            pb.DeliveryAttempt(
                attempt=a.attempt,
                started_at=_timestamp(a.started_at),
                url=a.url,
                status_code=a.status_code or 0,
                error=a.error,
                latency_ms=round(a.latency_ms, 3),
                outcome=a.outcome.value,
            )
            for a in record.attempts
        )
    return message


def _page_token(status: DeliveryStatus, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{status.value}:{seq}".encode()).decode()


def _cursor(token: str, status: DeliveryStatus) -> int | None:
    """The seq to continue before; the token must come from the same listing."""
    if not token:
        return None
    try:
        kind, _, seq = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == status.value and seq.isdigit():
            return int(seq)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidArgument([FieldViolation("page_token", "not a token from this listing")])


def _status(value: str) -> DeliveryStatus:
    if not value:
        return DeliveryStatus.FAILED
    try:
        return DeliveryStatus(value)
    except ValueError:
        raise InvalidArgument([FieldViolation("status", "one of failed, pending, delivered")]) from None


def _delivery_id(value: str) -> str:
    if not value:
        raise InvalidArgument([FieldViolation("delivery_id", "required")])
    if len(value) > _MAX_ID_LENGTH:
        raise InvalidArgument([FieldViolation("delivery_id", f"at most {_MAX_ID_LENGTH} characters")])
    return value


def _not_found(delivery_id: str) -> NotFound:
    return NotFound(f"no delivery {delivery_id}", resource_type="delivery", resource_name=delivery_id)


@contextmanager
def _store_errors() -> Iterator[None]:
    """A store that cannot answer (Redis down in a cluster) is UNAVAILABLE, not an internal error."""
    try:
        yield
    except OutboxError as exc:
        log.warning("Deliveries API: the webhook store failed: %s", exc)
        raise Unavailable(
            "webhook deliveries cannot be read now: the store is unreachable; retry later",
            reason="store_unavailable",
        ) from exc


class DeliveriesServicer(pb_grpc.DeliveriesServicer):
    def __init__(self, service: WebhookService) -> None:
        self._service = service

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListDeliveriesResponse:
        status = _status(request.status)
        size = validation.page_size(request.page_size)
        before = _cursor(request.page_token, status)
        # One extra row says whether another page exists.
        with _store_errors():
            rows = self._service.list_deliveries(current_app().app_id, status, size + 1, before)
        more = len(rows) > size
        rows = rows[:size]
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_message(r) for r in rows],
            next_page_token=_page_token(status, rows[-1].seq) if more else "",
        )

    async def GetDelivery(
        self, request: pb.GetDeliveryRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Delivery:
        delivery_id = _delivery_id(request.delivery_id)
        with _store_errors():
            record = self._service.get_delivery(current_app().app_id, delivery_id)
        if record is None:
            raise _not_found(delivery_id)
        return delivery_message(record, detail=True)

    async def RedeliverDelivery(
        self, request: pb.RedeliverDeliveryRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Delivery:
        delivery_id = _delivery_id(request.delivery_id)
        try:
            with _store_errors():
                record = self._service.redeliver(current_app().app_id, delivery_id)
        except RedeliverRefused as exc:
            raise FailedPrecondition(f"delivery {delivery_id}: {exc}", reason="redeliver_refused") from exc
        if record is None:
            raise _not_found(delivery_id)
        return delivery_message(record, detail=True)


def add_to_server(server: grpc.aio.Server, service: WebhookService) -> None:
    """Register the Deliveries service; the composition root calls this."""
    pb_grpc.add_DeliveriesServicer_to_server(DeliveriesServicer(service), server)
