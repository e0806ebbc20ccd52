"""Call-control gateway for FreeSWITCH.

Applications answer, hang up and disconnect live calls over gRPC (and REST
through Envoy); FreeSWITCH hands calls over with ``socket ... async full``; the
outcomes come back as operations and webhooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callcontrol.config import Application, ConfigError, GatewayConfig
from callcontrol.errors import (
    FailedPrecondition,
    FieldViolation,
    GatewayError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from callcontrol.events import (
    CallAnswered,
    CallHangup,
    CallInitiated,
    CommandResult,
    EventStream,
    LifecycleEvent,
)

if TYPE_CHECKING:
    from callcontrol.gateway import Gateway

__version__ = "0.1.0"

__all__ = [
    "Application",
    "CallAnswered",
    "CallHangup",
    "CallInitiated",
    "CommandResult",
    "ConfigError",
    "EventStream",
    "FailedPrecondition",
    "FieldViolation",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "InvalidArgument",
    "LifecycleEvent",
    "NotFound",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Gateway pulls in gRPC and gevent: load it only when asked for.
    if name == "Gateway":
        from callcontrol.gateway import Gateway

        return Gateway
    raise AttributeError(f"module 'callcontrol' has no attribute {name!r}")
