"""The retry decision for any status and any ``Retry-After`` a receiver can send (hypothesis).

Header values reach ``decide`` as aiohttp decodes them: UTF-8 with undecodable
bytes as surrogates. The properties: it never raises, and what it decides
stays inside the rules (2xx delivered, other non-retriable statuses failed at
once, retries bounded by ``max_attempts`` and ``max_age_s``, waits finite).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from callcontrol.webhooks import Outcome, RetryPolicy
from callcontrol.webhooks.retry import LONGEST_RETRY_AFTER_S, decide, is_retriable, parse_retry_after

POLICY = RetryPolicy(backoff_base_s=1.0, backoff_max_s=600.0)
# Generous deadline: each example takes microseconds, but the machine is shared.
BOUNDED = settings(max_examples=200, deadline=2000)


def _as_aiohttp_decodes(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


header_values = st.one_of(
    st.none(),
    st.binary(max_size=200).map(_as_aiohttp_decodes),
    st.text(max_size=200),
    st.integers(min_value=0).map(str),
    st.from_regex(r"\A[ \t]*[0-9]{1,40}[ \t]*\Z"),
    st.from_regex(
        r"\A(Mon|Tue|Fri|\w{0,9}),? [0-9]{1,3} (Jan|Feb|Dec|\w{0,4}) -?[0-9]{1,20} "
        r"[0-9]{1,3}:[0-9]{1,3}(:[0-9]{1,3})? (GMT|UTC|EST|[+-][0-9]{1,20}|\w{0,4})\Z"
    ),
)
# The values of issue 7: each once raised out of the parser and ended delivery for everyone.
ISSUE_7 = ("Mon, 01 Jan 99999999999 00:00:00 GMT", "²")
statuses = st.one_of(
    st.sampled_from([None, 200, 204, 301, 400, 404, 429, 500, 503, 599]),
    st.integers(min_value=100, max_value=999),
    st.integers(min_value=-(2**63), max_value=2**63),
)
# Seconds since the epoch, around today and far either side.
moments = st.floats(min_value=0.0, max_value=1e11, allow_nan=False)


@given(value=header_values, now=moments)
@example(value=ISSUE_7[0], now=1.8e9)
@example(value=ISSUE_7[1], now=1.8e9)
@BOUNDED
def test_parse_retry_after_never_raises_and_is_finite(value: str | None, now: float) -> None:
    wait = parse_retry_after(value, now)
    assert wait is None or 0.0 <= wait <= LONGEST_RETRY_AFTER_S


@given(seconds=st.integers(min_value=0, max_value=10**30), pad=st.sampled_from(["", " ", "\t "]))
@BOUNDED
def test_delta_seconds_are_read_as_given(seconds: int, pad: str) -> None:
    assert parse_retry_after(f"{pad}{seconds}{pad}", now=0.0) == min(float(seconds), LONGEST_RETRY_AFTER_S)


@given(
    when=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    now=st.floats(min_value=0.0, max_value=4e9, allow_nan=False),
)
@BOUNDED
def test_http_dates_are_read_as_given(when: datetime, now: float) -> None:
    wait = parse_retry_after(format_datetime(when.replace(microsecond=0), usegmt=True), now)
    expected = min(max(0.0, when.replace(microsecond=0).timestamp() - now), LONGEST_RETRY_AFTER_S)
    assert wait is not None
    assert math.isclose(wait, expected, abs_tol=1e-6)


@given(
    digit=st.characters(categories=["Nd", "No"]).filter(lambda c: not c.isascii()),
    ahead=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1)),
)
@BOUNDED
def test_non_ascii_numbers_are_not_read(digit: str, ahead: timedelta) -> None:
    assert parse_retry_after(digit, now=0.0) is None
    assert parse_retry_after(f"{digit}{int(ahead.total_seconds())}", now=0.0) is None


@given(
    status=statuses,
    retry_after=header_values,
    max_attempts=st.integers(min_value=1, max_value=50),
    attempts=st.integers(min_value=1, max_value=60),
    max_age_s=st.floats(min_value=0.001, max_value=1e9, allow_nan=False),
    started=moments,
    elapsed=st.floats(min_value=0.0, max_value=1e9, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
@example(
    status=503,
    retry_after=ISSUE_7[0],
    max_attempts=12,
    attempts=1,
    max_age_s=86400.0,
    started=1.8e9,
    elapsed=0.0,
    seed=0,
)
@example(
    status=503,
    retry_after=ISSUE_7[1],
    max_attempts=12,
    attempts=1,
    max_age_s=86400.0,
    started=1.8e9,
    elapsed=0.0,
    seed=0,
)
@BOUNDED
def test_decide_never_raises_and_keeps_the_rules(
    status: int | None,
    retry_after: str | None,
    max_attempts: int,
    attempts: int,
    max_age_s: float,
    started: float,
    elapsed: float,
    seed: int,
) -> None:
    now = started + elapsed
    decision = decide(
        status_code=status,
        retry_after=retry_after,
        round_attempts=attempts,
        round_started_at=started,
        now=now,
        max_attempts=max_attempts,
        max_age_s=max_age_s,
        policy=POLICY,
        rng=random.Random(seed),
    )
    if status is not None and 200 <= status <= 299:
        assert decision.outcome is Outcome.DELIVERED
    elif not is_retriable(status) or attempts >= max_attempts:
        assert decision.outcome is Outcome.FAILED
        assert decision.give_up_reason
    if decision.outcome is Outcome.RETRY:
        assert decision.next_attempt_at is not None
        assert math.isfinite(decision.next_attempt_at)
        assert now <= decision.next_attempt_at <= started + max_age_s + 1e-6 * max(1.0, started)
        assert attempts < max_attempts
        asked = parse_retry_after(retry_after, now)
        if asked is not None:  # the least wait the receiver asked for
            assert decision.next_attempt_at >= now + asked
    else:
        assert decision.next_attempt_at is None
