"""When to try a webhook again, and when to stop.

Retried: no response (timeout, connection refused or reset) and the statuses
that say "later": 429 and 5xx. A ``Retry-After`` (seconds or an HTTP date)
on those is honoured as the least wait; one that cannot be read (any bytes a receiver
may send) is ignored, never an error, and the backoff applies. Anything else
that is not 2xx (other 4xx, an unexpected 1xx or 3xx) means the receiver
refused this body and sending it again will not help, so the delivery fails
at once and waits for a person (see the Deliveries API's redeliver).

Between retries: exponential backoff with full jitter (a uniform delay in
``[0, min(max, base * 2**(n-1))]``), which spreads a recovering receiver's
backlog instead of hitting it in waves. A delivery stops after
``max_attempts`` attempts or once its next attempt would start more than
``max_age_s`` after its first (a redelivery starts a fresh budget).
"""

from __future__ import annotations

import calendar
import email.utils
import math
import random
from dataclasses import dataclass
from typing import Final

from callcontrol.webhooks.outbox import Outcome

# Longer than any sensible max_age_s; keeps a receiver's "in a billion years" finite.
LONGEST_RETRY_AFTER_S: Final = 10 * 365 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff and retention knobs that WebhookConfig does not (yet) carry."""

    backoff_base_s: float = 1.0
    backoff_max_s: float = 600.0
    # Finished rows are deleted after these ages, so the file stays bounded.
    delivered_retention_s: float = 24 * 3600.0
    failed_retention_s: float = 30 * 24 * 3600.0
    prune_interval_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise ValueError("backoff_base_s must be > 0 and <= backoff_max_s")
        if min(self.delivered_retention_s, self.failed_retention_s, self.prune_interval_s) <= 0:
            raise ValueError("retention and prune interval must be > 0")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one attempt and, for a retry, when the next one starts."""

    outcome: Outcome
    next_attempt_at: float | None = None
    # Why the delivery was given up, when it was.
    give_up_reason: str = ""


def is_retriable(status_code: int | None) -> bool:
    return status_code is None or status_code == 429 or 500 <= status_code <= 599


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP date); None if absent or unusable.

    Never raises: the value is whatever the receiver sent, already decoded by
    aiohttp (undecodable bytes arrive as surrogates). The result is finite,
    between 0 and ``LONGEST_RETRY_AFTER_S``.
    """
    if not value:
        return None
    value = value.strip(" \t")
    # Both forms are ASCII (RFC 9110). This also turns away "²" and "٣", which
    # str.isdigit() accepts and float() does not or reads as a number.
    if not value.isascii():
        return None
    if value.isdigit():
        return min(float(value), LONGEST_RETRY_AFTER_S)  # float() of a long string is inf, not an error
    return _seconds_until(value, now)


def _seconds_until(http_date: str, now: float) -> float | None:
    # parsedate_tz returns None for what it cannot read; the range checks
    # below keep calendar.timegm (datetime underneath) from seeing a date it
    # would reject, such as the year 99999999999.
    parsed = email.utils.parsedate_tz(http_date)
    if parsed is None or parsed[9] is None:  # no zone, or "-0000": not an HTTP date
        return None
    year, month, day, hour, minute, second = parsed[:6]
    if not (
        1 <= month <= 12 and 1 <= day <= 31 and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 60
    ):
        return None
    if year > 9999:
        return LONGEST_RETRY_AFTER_S
    if year < 1970:
        return 0.0
    when = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - parsed[9]
    return min(max(0.0, when - now), LONGEST_RETRY_AFTER_S)


def backoff_delay(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """Full-jitter delay after the ``failures``-th failed attempt (1-based)."""
    exponent = min(failures - 1, 62)
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * math.ldexp(1.0, exponent))
    return rng.uniform(0.0, ceiling)


def decide(
    *,
    status_code: int | None,
    retry_after: str | None,
    round_attempts: int,
    round_started_at: float,
    now: float,
    max_attempts: int,
    max_age_s: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """Decide after an attempt; ``round_attempts`` counts it."""
    if status_code is not None and 200 <= status_code <= 299:
        return Decision(Outcome.DELIVERED)
    if not is_retriable(status_code):
        return Decision(Outcome.FAILED, give_up_reason=f"HTTP {status_code} is not retried")
    if round_attempts >= max_attempts:
        return Decision(Outcome.FAILED, give_up_reason=f"gave up after {round_attempts} attempts")
    # Retry-After is the least the receiver asks us to wait (RFC 9110), not
    # a licence to retry sooner than the backoff: "Retry-After: 0" on every
    # answer would otherwise make a hot loop of attempts.
    wait = backoff_delay(policy, round_attempts, rng)
    asked = parse_retry_after(retry_after, now)
    if asked is not None:
        wait = max(wait, asked)
    next_at = now + wait
    if next_at - round_started_at > max_age_s:
        return Decision(
            Outcome.FAILED, give_up_reason=f"gave up: next attempt past max_age_s ({max_age_s:g} s)"
        )
    return Decision(Outcome.RETRY, next_attempt_at=next_at)
