"""One webhook attempt over aiohttp: POST, then the status or what went wrong.

Foreign errors stop here: a timeout or any aiohttp client error becomes an
``AttemptResult`` with no status and a short error text, which the retry
rules treat as "try later". Redirects are not followed: a webhook URL that
redirects is a configuration mistake better shown than hidden.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

USER_AGENT = "callcontrol-gateway-webhooks/1"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    error: str
    latency_s: float
    retry_after: str | None = None


def default_session() -> aiohttp.ClientSession:
    """A client session with no global connection cap.

    aiohttp's default connector allows 100 connections in total, which would
    let a few dead receivers starve every other application; the service's
    per-destination limit bounds connections instead.
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))


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
            headers={**headers, "content-type": "application/json", "user-agent": USER_AGENT},
            timeout=client_timeout,
            allow_redirects=False,
        ) as response:
            status = response.status
            retry_after = response.headers.get("retry-after")
            # The status is the answer. Drain a small reply so the connection
            # can be reused; a large or stalled one just closes it.
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                await response.content.read(64 * 1024)
    except TimeoutError:
        return AttemptResult(
            None, f"timeout after {client_timeout.total or 0:g} s", time.perf_counter() - start
        )
    except aiohttp.ClientError as exc:
        text = str(exc) or type(exc).__name__
        return AttemptResult(None, f"{type(exc).__name__}: {text}"[:500], time.perf_counter() - start)
    return AttemptResult(status, "", time.perf_counter() - start, retry_after)
