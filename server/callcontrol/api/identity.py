"""Who is calling: set by the auth interceptor for the duration of one RPC."""

from __future__ import annotations

from contextvars import ContextVar

from callcontrol.config import Application
from callcontrol.logs import request_id

__all__ = ["current_app", "request_id", "set_current_app"]

_caller: ContextVar[Application] = ContextVar("callcontrol_caller")


def current_app() -> Application:
    """The authenticated application of the RPC being served."""
    return _caller.get()


def set_current_app(app: Application) -> object:
    return _caller.set(app)
