"""``python -m callcontrol``: run the gateway (and, for a demo, everything around it).

Configuration: defaults < ``--config FILE`` (TOML) < ``CALLCONTROL_*`` environment
variables < flags. Without a config file the gateway runs in demo mode: the
demo application, the built-in FreeSWITCH simulator placing a call, and a
local webhook receiver that prints what it gets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from callcontrol.config import (
    DEMO_API_KEY,
    DEMO_APP_ID,
    Address,
    ConfigError,
    GatewayConfig,
    demo_application,
    load_file,
)
from callcontrol.startup import EXIT_STATUS, StartupError, one_line

log = logging.getLogger("callcontrol")

ENV_PREFIX = "CALLCONTROL_"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callcontrol", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--config", type=Path, help="TOML configuration file (env CALLCONTROL_CONFIG)")
    p.add_argument("--grpc-listen", help="gRPC address, host:port (default 127.0.0.1:50051)")
    p.add_argument(
        "--esl-listen", help="outbound Event Socket address FreeSWITCH connects to (127.0.0.1:8084)"
    )
    p.add_argument("--rest-listen", help="Envoy REST address (127.0.0.1:8080)")
    p.add_argument("--no-envoy", action="store_true", help="run the gRPC gateway alone")
    p.add_argument(
        "--simulator",
        choices=("on", "off"),
        help="start the FreeSWITCH simulator (default: on without --config)",
    )
    p.add_argument("--demo-calls", type=int, default=1, help="calls the simulator places in demo mode")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    return p


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> GatewayConfig:
    """Merge the sources; raises ConfigError naming the bad setting."""
    path = args.config or (Path(env[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in env else None)
    if path is not None:
        # A real deployment: no simulator unless asked for.
        cfg = load_file(path, GatewayConfig(simulator=False))
    else:
        cfg = GatewayConfig(applications=(demo_application(),), simulator=True)

    def pick(flag: str | None, name: str) -> str | None:
        return flag if flag is not None else env.get(ENV_PREFIX + name)

    if (value := pick(args.grpc_listen, "GRPC_LISTEN")) is not None:
        cfg = replace(cfg, grpc_listen=Address.parse(value, "grpc listen"))
    if (value := pick(args.esl_listen, "ESL_LISTEN")) is not None:
        cfg = replace(cfg, esl=replace(cfg.esl, listen=Address.parse(value, "esl listen")))
    if (value := pick(args.rest_listen, "REST_LISTEN")) is not None:
        cfg = replace(cfg, rest=replace(cfg.rest, listen=Address.parse(value, "rest listen")))
    if (value := pick(args.simulator, "SIMULATOR")) is not None:
        cfg = replace(cfg, simulator=value.lower() in ("on", "1", "true", "yes"))
    if (value := pick(args.log_level, "LOG_LEVEL")) is not None:
        cfg = replace(cfg, log_level=value.upper())
    if not cfg.applications:
        raise ConfigError("applications: at least one application is required")
    return cfg


async def serve(cfg: GatewayConfig, *, envoy: bool, demo_calls: int) -> None:
    from callcontrol.runner import run_stack

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_stack(cfg, stop, envoy=envoy, demo_calls=demo_calls)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = build_config(args, os.environ)
    except ConfigError as exc:
        print(f"configuration error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_STATUS
    try:
        logging.basicConfig(
            level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    except ValueError as exc:
        print(f"configuration error: log_level: {exc}", file=sys.stderr)
        return EXIT_STATUS
    if cfg.simulator and cfg.application(DEMO_APP_ID) is not None:
        log.info("demo credentials: X-App-ID: %s  X-API-Key: %s", DEMO_APP_ID, DEMO_API_KEY)
    try:
        asyncio.run(serve(cfg, envoy=not args.no_envoy, demo_calls=args.demo_calls))
    except StartupError as exc:
        print(f"callcontrol: cannot start: {exc}", file=sys.stderr)
        return EXIT_STATUS
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
