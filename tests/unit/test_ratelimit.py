"""Token buckets per application and group, and per client address (no sockets, a fake clock)."""

from __future__ import annotations

import pytest

from callcontrol.api.client_address import client_address
from callcontrol.api.ratelimit import (
    AuthFailureLimiter,
    RateLimited,
    RateLimiter,
    TokenBuckets,
    method_groups,
    retry_after_seconds,
)

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


def test_failed_authentications_are_limited_per_address_and_refill() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(3, clock=clock)  # 3 per minute, in a burst of 3
    for _ in range(3):
        limiter.check("198.51.100.7")
        limiter.failed("198.51.100.7")
    with pytest.raises(RateLimited) as err:
        limiter.check("198.51.100.7")
    assert err.value.retry_after_s == pytest.approx(20.0)
    assert retry_after_seconds(err.value) == 20
    limiter.check("198.51.100.8")  # another address
    clock.now += 20
    limiter.check("198.51.100.7")


def test_the_tracked_addresses_are_bounded_least_recent_first() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(1.0, 1.0, max_keys=2, clock=Clock())
    buckets.spend("a")
    buckets.spend("b")
    assert buckets.wait("a") > 0  # touched: now the most recent
    buckets.spend("c")  # evicts b
    assert buckets.wait("a") > 0
    assert buckets.wait("b") == 0


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("ipv4:203.0.113.5:4000", None, "203.0.113.5"),
        # Only a loopback peer (Envoy beside the server) is believed, and only its last hop.
        ("ipv4:203.0.113.5:4000", "10.0.0.1", "203.0.113.5"),
        ("ipv4:127.0.0.1:4000", "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("ipv6:[::1]:4000", "2001:db8::1", "2001:db8::1"),
        ("ipv4:127.0.0.1:4000", "not-an-address", "127.0.0.1"),
        ("ipv6:[2001:db8::2]:4000", None, "2001:db8::2"),
        ("unix:/run/gw.sock", "203.0.113.9", "unix:/run/gw.sock"),
    ],
)
def test_the_client_address_is_the_peer_or_envoys_last_hop(
    peer: str, forwarded: str | None, expected: str
) -> None:
    assert client_address(peer, forwarded) == expected


def test_a_long_forwarded_header_is_read_but_never_kept() -> None:
    from callcontrol.api import client_address as module

    kept = module._address_text.cache_info().currsize
    padded = " " * 1000 + "203.0.113.77"
    assert client_address("ipv4:127.0.0.1:4000", "198.51.100.1," + padded) == "203.0.113.77"
    # The same short address is remembered; the client's long text is not.
    assert module._address_text.cache_info().currsize == kept
    assert client_address("ipv4:127.0.0.1:4000", "203.0.113.77") == "203.0.113.77"
    assert module._address_text.cache_info().currsize == kept + 1
