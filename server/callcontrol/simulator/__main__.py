"""Place simulated calls into a gateway: ``python -m callcontrol.simulator --gateway 127.0.0.1:8084``.

Each call is logged as it goes (commands received, state changes). A call still up
after ``--hold`` seconds is hung up by its caller.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence

from callcontrol.simulator.call import HANGUP_ORDERS, HangupOrder, SimulatedCall
from callcontrol.simulator.switch import FreeSwitchSimulator

log = logging.getLogger("callcontrol.simulator")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value < 3600:
        raise argparse.ArgumentTypeError(f"expected 0 <= seconds < 3600, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m callcontrol.simulator", description=__doc__)
    parser.add_argument(
        "--gateway", type=_address, default=("127.0.0.1", 8084), help="HOST:PORT of the listener"
    )
    parser.add_argument("--calls", type=int, default=1, help="how many calls to place (default 1)")
    parser.add_argument("--app-id", default="demo-app", help="call_control_app_id ('' for none)")
    parser.add_argument("--caller", default="1000", help="caller number of the first call")
    parser.add_argument("--destination", default="8084", help="destination number")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds before the caller hangs up")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between calls")
    parser.add_argument(
        "--answer-delay",
        type=_seconds,
        default=0.02,
        help="seconds FreeSWITCH takes to execute an answer (default 0.02)",
    )
    parser.add_argument(
        "--answer-never-completes",
        action="store_true",
        help="accept answer commands but never confirm them (the gateway times them out)",
    )
    parser.add_argument(
        "--hangup-order",
        choices=[*HANGUP_ORDERS, "mixed"],
        default=None,
        help="what follows CHANNEL_HANGUP (default: FreeSWITCH's usual); 'mixed' takes each in turn",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _order(choice: str | None, n: int) -> HangupOrder | None:
    if choice == "mixed":
        orders: list[HangupOrder] = list(HANGUP_ORDERS)
        return orders[n % len(orders)]
    return next((order for order in HANGUP_ORDERS if order == choice), None)


def _caller(first: str, n: int) -> str:
    return str(int(first) + n) if first.isdigit() else f"{first}{n}"


async def _follow(call: SimulatedCall, hold: float, dialplan_playback: float) -> None:
    with contextlib.suppress(TimeoutError):
        await call.wait_closed(timeout=hold)
    if call.state in ("ringing", "answered"):
        log.info("call %s: caller hangs up after %.1f s", call.uuid, hold)
        await call.caller_hangup()
    # A call handed back to the dialplan finishes it (playback, hangup) before we report it.
    with contextlib.suppress(TimeoutError):
        await call.wait_state("destroyed", timeout=dialplan_playback + 1)
    log.info("call %s: finished in state %s (cause %s)", call.uuid, call.state, call.hangup_cause)


async def run(args: argparse.Namespace) -> int:
    host, port = args.gateway
    simulator = FreeSwitchSimulator(host, port)
    try:
        followers = []
        for n in range(args.calls):
            call = await simulator.place_call(
                app_id=args.app_id or None,
                caller_number=_caller(args.caller, n),
                destination_number=args.destination,
                answer_delay=args.answer_delay,
                answer_completes=not args.answer_never_completes,
                hangup_order=_order(args.hangup_order, n),
            )
            followers.append(asyncio.create_task(_follow(call, args.hold, simulator.dialplan_playback)))
            if args.interval:
                await asyncio.sleep(args.interval)
        await asyncio.gather(*followers)
    finally:
        await simulator.close()
    failed = [c for c in simulator.calls.values() if c.socket_error is not None]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
