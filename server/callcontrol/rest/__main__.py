"""Command line: print the OpenAPI document, or write Envoy's config for a gRPC address.

    python -m callcontrol.rest openapi
    python -m callcontrol.rest config --grpc 127.0.0.1:50051 --out .run/envoy
    envoy -c .run/envoy/envoy.json --disable-hot-restart

The run command uses ``EnvoyProcess`` instead; this is for looking at the
config, or running Envoy by hand against a gateway already up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from callcontrol.config import Address, ConfigError, RestConfig
from callcontrol.rest.envoy_process import write_run_files
from callcontrol.rest.openapi import render_openapi


def main(argv: list[str] | None = None) -> int:
    defaults = RestConfig()
    parser = argparse.ArgumentParser(prog="python -m callcontrol.rest", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("openapi", help="print the OpenAPI document")
    config = commands.add_parser("config", help="write envoy.json and openapi.json")
    config.add_argument("--grpc", required=True, help="host:port of the gateway's gRPC server")
    config.add_argument("--listen", default=str(defaults.listen), help="REST listener host:port")
    config.add_argument("--admin", default=str(defaults.admin), help="Envoy admin host:port (loopback)")
    config.add_argument(
        "--access-log", type=Path, default=None, help="JSON access log file (default: stderr)"
    )
    config.add_argument("--out", type=Path, default=Path(".run/envoy"), help="directory to write into")
    args = parser.parse_args(argv)
    if args.command == "openapi":
        sys.stdout.write(render_openapi())
        return 0
    try:
        rest = RestConfig(
            listen=Address.parse(args.listen, "--listen"),
            admin=Address.parse(args.admin, "--admin"),
        )
        files = write_run_files(
            args.out, rest, Address.parse(args.grpc, "--grpc"), access_log_path=args.access_log
        )
    except ConfigError as exc:
        parser.error(str(exc))
    print(files.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
