"""The FreeSWITCH simulator in its own process, placing calls on request.

``place``: n calls at a given rate (0: as fast as connections open), held open
until something ends them; returns their session ids. ``hangup_all``: every
live call's caller hangs up. ``live``: how many calls are still up. ``settle``: until
the sockets of ended calls are closed. Calls
that are over are forgotten so a long run does not grow here.
``python -m benchmarks.simdriver --gateway HOST:PORT``
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks import worker
from callcontrol.simulator import FreeSwitchSimulator

Json = worker.Json

_sim: FreeSwitchSimulator | None = None
_ALIVE = ("ringing", "answered")


def _simulator() -> FreeSwitchSimulator:
    assert _sim is not None
    return _sim


def _forget_finished(sim: FreeSwitchSimulator) -> None:
    for uuid in [u for u, c in sim.calls.items() if c.state == "destroyed"]:
        del sim.calls[uuid]


async def place(args: Json) -> Json:
    """Open-loop: call k starts at t0 + k/rate whatever happened to the ones before."""
    sim = _simulator()
    _forget_finished(sim)
    n, rate = int(args["n"]), float(args.get("rate", 0))
    app_id = str(args["app_id"])
    uuids: list[str] = []
    failed = 0
    t0 = time.perf_counter()
    for k in range(n):
        if rate > 0:
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        call = await sim.place_call(
            app_id=app_id, caller_number=f"+1555{k % 10_000_000:07d}", answer_delay=0.0
        )
        if call.socket_error is not None:
            failed += 1
        else:
            uuids.append(call.uuid)
    seconds = time.perf_counter() - t0
    return {
        "session_ids": uuids,
        "placed": n,
        "failed": failed,
        "seconds": round(seconds, 4),
        "rate": round(n / seconds, 1) if seconds > 0 else None,
    }


async def hangup_all(args: Json) -> Json:
    sim = _simulator()
    calls = [c for c in sim.calls.values() if c.state in _ALIVE]
    for call in calls:
        await call.caller_hangup()
    return {"hung_up": len(calls)}


async def live(args: Json) -> Json:
    sim = _simulator()
    _forget_finished(sim)
    return {"live": sum(c.state in _ALIVE for c in sim.calls.values())}


async def settle(args: Json) -> Json:
    """Until every call that is over has its socket closed (linger, exit, close: the gateway's work too)."""
    sim = _simulator()
    deadline = time.monotonic() + float(args.get("wait_s", 30.0))
    while True:
        open_ = sum(c.socket_open for c in sim.calls.values() if c.state not in _ALIVE)
        if not open_ or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    _forget_finished(sim)
    return {"settled": not open_, "still_open": open_}


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", type=_address, required=True, help="the gateway's ESL HOST:PORT")
    options = parser.parse_args()

    async def start() -> Json:
        global _sim
        _sim = FreeSwitchSimulator(*options.gateway)
        return {}

    worker.main({"place": place, "hangup_all": hangup_all, "live": live, "settle": settle}, start)
