"""``python -m callcontrol``: run the gateway (and, for a demo, everything around it).

Configuration: defaults < ``--config FILE`` (TOML) < ``CALLCONTROL_*`` environment
variables < flags. Without a config file the gateway runs in demo mode: the
demo application, the built-in FreeSWITCH simulator placing a call, and a
local webhook receiver that prints what it gets.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import uvloop

from callcontrol import logs
from callcontrol.config import (
    DEMO_API_KEY,
    DEMO_APP_ID,
    ENV_PREFIX,
    ConfigError,
    GatewayConfig,
    apply_env,
    apply_text,
    demo_application,
    is_demo,
    load_file,
    validate,
)
from callcontrol.startup import EXIT_STATUS, StartupError, one_line

log = logging.getLogger("callcontrol")

# Flags that set a setting: flag -> dotted key (its environment variable is
# CALLCONTROL_<KEY>, like every setting's).
SETTING_FLAGS = {
    "--grpc-listen": "grpc.listen",
    "--esl-listen": "esl.listen",
    "--rest-listen": "rest.listen",
    "--rest-admin": "rest.admin",
    "--metrics-listen": "metrics.listen",
    "--outbox-path": "webhooks.outbox_path",
    "--simulator": "simulator",
    "--log-level": "log_level",
    "--log-format": "log_format",
}


def _version() -> str:
    try:
        return importlib.metadata.version("callcontrol-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callcontrol", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--config", type=Path, help="TOML configuration file (env CALLCONTROL_CONFIG)")
    p.add_argument("--grpc-listen", help="gRPC address, host:port (default 127.0.0.1:50051)")
    p.add_argument(
        "--esl-listen", help="outbound Event Socket address FreeSWITCH connects to (127.0.0.1:8084)"
    )
    p.add_argument("--rest-listen", help="Envoy REST address (127.0.0.1:8080)")
    p.add_argument("--rest-admin", help="Envoy admin address, loopback only (127.0.0.1:9901)")
    p.add_argument("--metrics-listen", help='Prometheus /metrics address (127.0.0.1:9464), or "off"')
    p.add_argument("--outbox-path", help="SQLite file of the webhook outbox (callcontrol-outbox.db)")
    p.add_argument("--no-envoy", action="store_true", help="run the gRPC gateway alone")
    p.add_argument(
        "--simulator",
        choices=("on", "off"),
        help="start the FreeSWITCH simulator (default: on without --config)",
    )
    p.add_argument("--demo-calls", type=int, default=1, help="calls the simulator places in demo mode")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--log-format", help="text (default) or json: one JSON object per line")
    return p


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> GatewayConfig:
    """Merge the sources; raises ConfigError naming the bad setting."""
    path = args.config or (Path(env[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in env else None)
    if path is not None:
        # A real deployment: no simulator unless asked for.
        cfg = load_file(path, GatewayConfig(simulator=False))
    else:
        cfg = GatewayConfig(applications=(demo_application(),), simulator=True)

    # Every setting has a CALLCONTROL_* variable; the listeners and the outbox a flag too.
    cfg = apply_env(cfg, env)
    for flag, key in SETTING_FLAGS.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            cfg = apply_text(cfg, key, value, flag)
    validate(cfg)
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
    logs.configure(cfg.log_level, cfg.log_format)
    if cfg.simulator and is_demo(cfg):
        log.info("demo credentials: X-App-ID: %s  X-API-Key: %s", DEMO_APP_ID, DEMO_API_KEY)
    try:
        # uvloop: the same asyncio API with a cheaper loop (callbacks, sockets, the thread-safe
        # wake-ups from the ESL thread), a few % of the CPU per call (README, Benchmarks).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(cfg, envoy=not args.no_envoy, demo_calls=args.demo_calls))
    except StartupError as exc:
        print(f"callcontrol: cannot start: {exc}", file=sys.stderr)
        return EXIT_STATUS
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
