"""The leases a replica holds, read while one of them has just expired unrenewed."""

from __future__ import annotations

import time

from callcontrol.webhooks.leases import Leases


async def test_held_leaves_out_an_expired_lease_without_failing() -> None:
    leases = Leases(
        "redis://127.0.0.1:1/0",  # never contacted: `held` reads this replica's own state
        prefix="t:",
        replica_id="r1",
        apps=("a", "b", "c"),
        heartbeat_s=0.1,
        expiry_s=1.0,
        on_wake=lambda app_id: None,
    )
    try:
        now = time.monotonic()
        leases._held.update(a=now + 60, b=now - 1, c=now + 60)  # b's renewal came too late
        assert leases.held == frozenset({"a", "c"})  # dropping b while iterating raised
        assert leases.token_for("b") is None
    finally:
        await leases.aclose()
