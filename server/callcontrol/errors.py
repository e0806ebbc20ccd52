"""The gateway's errors.

GatewayError
├── InvalidArgument   a request field is malformed (carries field violations)
├── Unauthenticated   missing or wrong credentials
├── NotFound          no such session/operation for this application
├── FailedPrecondition the session cannot take the command (disconnected, hung up)
├── ResourceExhausted  over a limit
└── Unavailable       FreeSWITCH or a dependency is unreachable (retriable)

Domain code raises these; the API layer maps them to gRPC status codes in one
place (``callcontrol.api.interceptors``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class GatewayError(Exception):
    retriable = False
    #: machine-readable reason (google.rpc.ErrorInfo reason)
    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(GatewayError):
    reason = "invalid_argument"

    def __init__(self, violations: list[FieldViolation]) -> None:
        text = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {text}")
        self.violations = tuple(violations)


class Unauthenticated(GatewayError):
    reason = "unauthenticated"


class NotFound(GatewayError):
    reason = "not_found"

    def __init__(self, message: str, *, resource_type: str, resource_name: str) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name


class FailedPrecondition(GatewayError):
    reason = "failed_precondition"


class ResourceExhausted(GatewayError):
    reason = "resource_exhausted"
    retriable = True


class Unavailable(GatewayError):
    reason = "unavailable"
    retriable = True
