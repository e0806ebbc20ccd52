"""Domain errors → gRPC status with google.rpc details, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from callcontrol import errors
from callcontrol.api.ratelimit import RateLimited, retry_after_seconds

_CODES: dict[type[errors.GatewayError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
}
DOMAIN = "callcontrol.gateway"
# Metadata a RESOURCE_EXHAUSTED carries for HTTP clients: Envoy's rest.lua copies it
# into the 429's Retry-After header (gRPC clients read RetryInfo).
RETRY_AFTER = "retry-after"


@dataclass(frozen=True, slots=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: errors.GatewayError) -> grpc.Status:
    code = next((c for t, c in _CODES.items() if isinstance(error, t)), code_pb2.INTERNAL)
    details = []
    if isinstance(error, errors.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, RateLimited):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=retry_after_seconds(error)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    elif isinstance(error, errors.NotFound):
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=error.resource_type,
                    resource_name=error.resource_name,
                    description=error.message,
                )
            )
        )
    details.append(_pack(error_details_pb2.ErrorInfo(reason=error.reason.upper(), domain=DOMAIN)))
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=code, message=error.message, details=details)
    )
    if isinstance(error, RateLimited):
        extra = ((RETRY_AFTER, str(retry_after_seconds(error))),)
        return _Status(status.code, status.details, (*status.trailing_metadata, *extra))
    return status


class Relayed(Exception):
    """Another replica's gateway answered with this status: the caller gets it unchanged."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


def relayed_status(
    code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, str | bytes], ...]
) -> grpc.Status:
    return _Status(code, details, trailing_metadata)
