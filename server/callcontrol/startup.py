"""Start-up failures, each told as one line that names its cause.

Whatever stops the gateway from starting (a setting, a listener that cannot
bind, the outbox held by another gateway, Envoy refusing to run) becomes a
``StartupError``; the entry point prints its message and exits with status 2.
"""

from __future__ import annotations

import errno
import os
import re
import socket

from callcontrol.config import Address

EXIT_STATUS = 2


class StartupError(Exception):
    """The gateway cannot start; the message is one line naming the cause."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, whitespace collapsed."""
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return text.strip() or "unknown error"


def bind_failed(setting: str, address: Address, exc: OSError) -> StartupError:
    # The OS's own words; asyncio wraps them in a longer sentence of its own.
    if exc.errno and not isinstance(exc, socket.gaierror):
        reason = os.strerror(exc.errno)
    else:
        reason = exc.strerror or str(exc)
    hint = ""
    if exc.errno == errno.EADDRINUSE:
        hint = " (another gateway, or the Envoy of one that crashed, may still hold it)"
    return StartupError(f"{setting} {address}: {reason}{hint}")


def ensure_bindable(setting: str, address: Address) -> None:
    """Bind ``address`` once, exclusively, and let go; raise StartupError with the OS's reason.

    gRPC's own bind failure carries no errno ("Failed to bind"), so the
    operator would not learn whether the port is taken or the host is not
    ours. The real bind follows at once; losing that race still fails, only
    with gRPC's vaguer words.
    """
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        raise bind_failed(setting, address, exc) from exc


# Envoy's fatal line: "[...][critical][main] [source...] error `cannot bind ...` initializing config ..."
_ENVOY_FATAL = re.compile(r"\]\[critical\]\[[^\]]*\] \[[^\]]*\]\s*(?P<what>[^\n]+)")
_QUOTED = re.compile(r"`([^`]+)`")


def envoy_cause(log_text: str) -> str | None:
    """What Envoy's last critical line says (its quoted error if it has one); None if none."""
    found = [m["what"].strip() for m in _ENVOY_FATAL.finditer(log_text)]
    if not found:
        return None
    quoted = _QUOTED.search(found[-1])
    return quoted[1] if quoted else found[-1]
