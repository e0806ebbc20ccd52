"""One webhook attempt: POST, then the status or what went wrong.

Foreign errors stop here: a timeout, a connection or TLS error, an answer
that is not HTTP becomes an ``AttemptResult`` with no status and a short
error text, which the retry rules treat as "try later". The text is reduced
to printable ASCII before it goes anywhere (logs, the outbox, the API): a
parser's message can quote the receiver's bytes.

What a receiver can make us do is bounded (see ``http_client``). The whole
attempt (connect, send, the head, the part of the body we read) has one
deadline, ``request_timeout_s``. Only the status and ``Retry-After`` matter;
at most ``RESPONSE_BODY_LIMIT`` bytes of the body are read (so the
connection can be reused) and never decompressed, and a longer or trickling
body just closes the connection. Redirects are not followed: a webhook URL
that redirects is a configuration mistake better shown than hidden. Cookies
are neither kept nor sent. An answer that breaks HTTP anywhere, even after a
good status line (a malformed chunk), is no answer: the attempt failed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from callcontrol.webhooks.http_client import Destination, InvalidResponse, InvalidURL, printable

__all__ = ["AttemptResult", "post_webhook"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    error: str
    latency_s: float
    retry_after: str | None = None


async def post_webhook(
    destination: Destination, body: bytes, headers: Mapping[str, str], timeout_s: float
) -> AttemptResult:
    """Send one attempt; never raises for network or HTTP trouble."""
    start = time.perf_counter()
    try:
        answer = await destination.post(body, headers, timeout_s)
    except TimeoutError:
        return AttemptResult(None, f"timeout after {timeout_s:g} s", time.perf_counter() - start)
    except (OSError, InvalidResponse, InvalidURL) as exc:
        text = str(exc) or type(exc).__name__
        return AttemptResult(None, printable(f"{type(exc).__name__}: {text}"), time.perf_counter() - start)
    return AttemptResult(answer.status, "", time.perf_counter() - start, answer.retry_after)
