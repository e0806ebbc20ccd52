"""Retry rules: what is retried, how long to wait, when to stop."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from callcontrol.webhooks import Outcome, RetryPolicy
from callcontrol.webhooks.retry import Decision, backoff_delay, decide, is_retriable, parse_retry_after

POLICY = RetryPolicy(backoff_base_s=1.0, backoff_max_s=60.0)


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (None, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (599, True),
        (400, False),
        (401, False),
        (404, False),
        (410, False),
        (422, False),
        (301, False),
        (100, False),
    ],
)
def test_retriable_statuses(status: int | None, retried: bool) -> None:
    assert is_retriable(status) is retried


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after("7", now=1000.0) == 7.0
    assert parse_retry_after(" 0 ", now=1000.0) == 0.0


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 3, 14, 9, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 3, 14, 9, 0, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now) == pytest.approx(30.0)
    earlier = format_datetime(datetime(2026, 3, 14, 8, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0


@pytest.mark.parametrize("junk", [None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2026"])
def test_unusable_retry_after_is_ignored(junk: str | None) -> None:
    assert parse_retry_after(junk, now=0.0) is None


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    rng = random.Random(7)
    for failures, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (500, 60.0)]:
        delays = [backoff_delay(POLICY, failures, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range, not a fixed step
        assert min(delays) < cap * 0.2


def _decide(
    status: int | None,
    *,
    attempts: int = 1,
    retry_after: str | None = None,
    started: float = 0.0,
    now: float = 100.0,
    max_attempts: int = 5,
    max_age_s: float = 3600.0,
) -> Decision:
    return decide(
        status_code=status,
        retry_after=retry_after,
        round_attempts=attempts,
        round_started_at=started,
        now=now,
        max_attempts=max_attempts,
        max_age_s=max_age_s,
        policy=POLICY,
        rng=random.Random(1),
    )


def test_2xx_is_delivered() -> None:
    assert _decide(200).outcome is Outcome.DELIVERED
    assert _decide(204).outcome is Outcome.DELIVERED


def test_other_4xx_fails_at_once() -> None:
    decision = _decide(400)
    assert decision.outcome is Outcome.FAILED
    assert "400" in decision.give_up_reason


def test_5xx_is_retried_with_backoff() -> None:
    decision = _decide(503, attempts=2)
    assert decision.outcome is Outcome.RETRY
    assert decision.next_attempt_at is not None
    assert 100.0 <= decision.next_attempt_at <= 102.0


def test_retry_after_wins_over_backoff() -> None:
    decision = _decide(429, retry_after="42")
    assert decision.next_attempt_at == 142.0


def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    backoff = _decide(503, attempts=6, max_attempts=20)
    assert backoff.next_attempt_at is not None
    assert backoff.next_attempt_at > 104.0  # the 6th failure's backoff (seed 1): 4.3 s
    assert (
        _decide(503, attempts=6, max_attempts=20, retry_after="0").next_attempt_at == backoff.next_attempt_at
    )
    assert _decide(503, attempts=6, max_attempts=20, retry_after="3000").next_attempt_at == 3100.0


def test_gives_up_after_max_attempts() -> None:
    assert _decide(None, attempts=4, max_attempts=5).outcome is Outcome.RETRY
    decision = _decide(None, attempts=5, max_attempts=5)
    assert decision.outcome is Outcome.FAILED
    assert "5 attempts" in decision.give_up_reason


def test_gives_up_when_the_next_attempt_would_be_too_old() -> None:
    decision = _decide(500, retry_after="600", started=0.0, now=3500.0, max_age_s=3600.0)
    assert decision.outcome is Outcome.FAILED
    assert "max_age" in decision.give_up_reason


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff_base_s=10.0, backoff_max_s=1.0)
    with pytest.raises(ValueError, match="retention"):
        RetryPolicy(delivered_retention_s=0)
