"""Token buckets per application and group (no sockets, a fake clock)."""

from __future__ import annotations

import pytest

from callcontrol.api.ratelimit import RateLimited, RateLimiter, method_groups, retry_after_seconds

GROUPS = method_groups(
    [
        ("callcontrol.v1.SessionCommands", "Answer", "sessions"),
        ("callcontrol.v1.Sessions", "ListSessions", "sessions"),
        ("callcontrol.v1.Operations", "GetOperation", "operations"),
    ]
)
ANSWER = "/callcontrol.v1.SessionCommands/Answer"
LIST = "/callcontrol.v1.Sessions/ListSessions"
GET_OP = "/callcontrol.v1.Operations/GetOperation"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_group_is_shared_by_its_methods_and_refills_over_time() -> None:
    clock = Clock()
    limiter = RateLimiter(2, GROUPS, clock=clock)
    limiter.check("a", ANSWER)
    limiter.check("a", LIST)
    with pytest.raises(RateLimited) as err:
        limiter.check("a", ANSWER)
    assert err.value.retry_after_s == pytest.approx(0.5)
    assert retry_after_seconds(err.value) == 1
    limiter.check("a", GET_OP)  # another group
    limiter.check("b", ANSWER)  # another application
    clock.now += 0.5
    limiter.check("a", ANSWER)
    with pytest.raises(RateLimited):
        limiter.check("a", LIST)


def test_methods_without_a_group_are_not_limited() -> None:
    limiter = RateLimiter(1, GROUPS, clock=Clock())
    for _ in range(10):
        limiter.check("a", "/grpc.health.v1.Health/Check")


def test_an_idle_bucket_holds_at_most_one_second_of_requests() -> None:
    clock = Clock()
    limiter = RateLimiter(3, GROUPS, clock=clock)
    limiter.check("a", LIST)
    clock.now += 3600
    for _ in range(3):
        limiter.check("a", LIST)
    with pytest.raises(RateLimited):
        limiter.check("a", LIST)
