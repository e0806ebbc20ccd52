"""One webhook attempt over aiohttp: POST, then the status or what went wrong.

Foreign errors stop here: a timeout, any aiohttp client error or socket error
becomes an ``AttemptResult`` with no status and a short error text, which the
retry rules treat as "try later". The text is reduced to printable ASCII
before it goes anywhere (logs, the outbox, the API): aiohttp quotes the
receiver's bytes in its parser errors.

What a receiver can make us do is bounded. The whole attempt (connect, send,
headers, the part of the body we read) has one deadline, ``request_timeout_s``.
Only the status and ``Retry-After`` matter; at most ``RESPONSE_BODY_LIMIT``
bytes of the body are read (so the connection can be reused) and never
decompressed, and a longer or trickling body just closes the connection.
Redirects are not followed: a webhook URL that redirects is a configuration
mistake better shown than hidden. Cookies are neither kept nor sent: the
client session is shared by all applications.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp

USER_AGENT = "callcontrol-gateway-webhooks/1"
RESPONSE_BODY_LIMIT: Final = 64 * 1024
_ERROR_LIMIT: Final = 300


def printable(text: str, limit: int = _ERROR_LIMIT) -> str:
    """``text`` with anything but printable ASCII replaced by "?", at most ``limit`` characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    error: str
    latency_s: float
    retry_after: str | None = None


def default_session() -> aiohttp.ClientSession:
    """The client session all lanes share.

    No global connection cap: aiohttp's default of 100 in total would let a
    few dead receivers starve every other application; the per-application
    limit bounds connections instead. No cookie jar: a receiver's cookies would
    otherwise ride along on another application's webhooks to the same host.
    No decompression: the body is never looked at, so inflating one (a
    small compressed answer can stand for gigabytes) would be work for nothing.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


async def post_webhook(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    client_timeout: aiohttp.ClientTimeout,
) -> AttemptResult:
    """Send one attempt; never raises for network or HTTP trouble."""
    start = time.perf_counter()
    try:
        async with session.post(
            url,
            data=body,
            headers={
                **headers,
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "accept-encoding": "identity",
            },
            timeout=client_timeout,
            allow_redirects=False,
        ) as response:
            status = response.status
            retry_after = response.headers.get("retry-after")
            # The status is the answer. Drain a small reply so the connection
            # can be reused; a large or stalled one just closes it.
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                await response.content.read(RESPONSE_BODY_LIMIT)
    except TimeoutError:
        return AttemptResult(
            None, f"timeout after {client_timeout.total or 0:g} s", time.perf_counter() - start
        )
    except (aiohttp.ClientError, OSError) as exc:
        text = str(exc) or type(exc).__name__
        return AttemptResult(None, printable(f"{type(exc).__name__}: {text}"), time.perf_counter() - start)
    return AttemptResult(status, "", time.perf_counter() - start, retry_after)
