"""Configuration as data: frozen dataclasses validated at start-up.

Sources, later ones winning: built-in defaults, a TOML file, environment
variables (``CALLCONTROL_*``), command-line flags. Only the entry point reads
the environment; everything else receives a ``GatewayConfig``. Errors name the
setting that is wrong.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEMO_APP_ID = "demo-app"
DEMO_API_KEY = "demo-key-change-me"
DEMO_WEBHOOK_SECRET = "whsec_ZGVtby13ZWJob29rLXNlY3JldC0zMmJ5dGVzISE="  # noqa: S105

_APP_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, setting: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{setting}: expected host:port, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Application:
    """An API client. Its key is kept only as a SHA-256 digest."""

    app_id: str
    api_key_sha256: bytes
    webhook_url: str = ""
    # Standard Webhooks secrets ("whsec_" + base64); the first signs, all are
    # sent as signatures so a receiver can rotate.
    webhook_secrets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EslConfig:
    # Where FreeSWITCH's `socket <host:port> async full` connects.
    listen: Address = Address("127.0.0.1", 8084)
    # Channel variable that names the owning application.
    app_variable: str = "call_control_app_id"
    # Deadline for FreeSWITCH's reply to one command (a reply can never come).
    reply_timeout_ms: int = 5000
    # Most concurrent outbound sockets; one more is closed at once (its call goes on in the dialplan).
    max_connections: int = 10000
    # Networks FreeSWITCH may connect from (CIDR, like FreeSWITCH's own ACLs); others are
    # closed at accept, before a byte is sent.
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Largest frame (header block + body) read from FreeSWITCH; real events are tens of kB.
    max_frame_bytes: int = 1024 * 1024
    # How long the rest of a begun frame may take to arrive; past it the socket is closed.
    partial_frame_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        allow_networks(self.allow)

    @property
    def allow_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return allow_networks(self.allow)


def allow_networks(allow: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``esl.allow`` as networks; a ConfigError naming the setting if any entry is not a CIDR."""
    if isinstance(allow, str) or not isinstance(allow, list | tuple):
        raise ConfigError('esl.allow: a list of networks, e.g. ["127.0.0.0/8", "::1/128"]')
    if not allow:
        raise ConfigError("esl.allow: at least one network (an empty list lets no FreeSWITCH in)")
    networks = []
    for entry in allow:
        try:
            if not isinstance(entry, str):
                raise TypeError("not a string")
            networks.append(ipaddress.ip_network(entry))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"esl.allow: {entry!r} is not a network ({exc})") from None
    return tuple(networks)


def _allow(raw: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get("allow", default)
    allow_networks(value)
    return tuple(value)


@dataclass(frozen=True, slots=True)
class OperationsConfig:
    # Deadline of the answer command (the spec's 2 s).
    timeout_ms: int = 2000
    # Finished operations kept for Get/Watch and idempotency, oldest dropped first.
    retention: int = 50000


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    # SQLite file of the durable outbox; ":memory:" keeps nothing across restarts.
    outbox_path: str = "callcontrol-outbox.db"
    request_timeout_s: float = 5.0
    max_attempts: int = 12
    max_age_s: float = 24 * 3600.0
    per_destination_concurrency: int = 4


@dataclass(frozen=True, slots=True)
class RestConfig:
    # Envoy's REST listener and admin (admin is always loopback).
    listen: Address = Address("127.0.0.1", 8080)
    admin: Address = Address("127.0.0.1", 9901)
    # Requests per second per application over REST (shared by all session endpoints).
    rate_limit_per_s: int = 50


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    grpc_listen: Address = Address("127.0.0.1", 50051)
    # Requests per second per application and group for gRPC callers (0: off);
    # REST is limited by Envoy (rest.rate_limit_per_s) before it gets here.
    grpc_rate_limit_per_s: int = 50
    esl: EslConfig = field(default_factory=EslConfig)
    operations: OperationsConfig = field(default_factory=OperationsConfig)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    rest: RestConfig = field(default_factory=RestConfig)
    applications: tuple[Application, ...] = ()
    # Prometheus text endpoint (GET /metrics); None turns it off.
    metrics_listen: Address | None = Address("127.0.0.1", 9464)
    # Address of a real FreeSWITCH is not needed for outbound ESL; this flag
    # only tells the run script whether to start the simulator.
    simulator: bool = True
    log_level: str = "INFO"

    def application(self, app_id: str) -> Application | None:
        for app in self.applications:
            if app.app_id == app_id:
                return app
        return None


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def demo_application(webhook_url: str = "") -> Application:
    return Application(
        app_id=DEMO_APP_ID,
        api_key_sha256=hash_api_key(DEMO_API_KEY),
        webhook_url=webhook_url,
        webhook_secrets=(DEMO_WEBHOOK_SECRET,),
    )


def _application(raw: Mapping[str, Any], index: int) -> Application:
    where = f"applications[{index}]"
    app_id = raw.get("id")
    if not isinstance(app_id, str) or not _APP_ID.match(app_id):
        raise ConfigError(f"{where}.id: 1-64 of [A-Za-z0-9._-] required")
    key, digest = raw.get("api_key"), raw.get("api_key_sha256")
    if (key is None) == (digest is None):
        raise ConfigError(f"{where}: set exactly one of api_key, api_key_sha256")
    if key is not None:
        if not isinstance(key, str) or len(key) < 8:
            raise ConfigError(f"{where}.api_key: at least 8 characters")
        key_digest = hash_api_key(key)
    else:
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
            raise ConfigError(f"{where}.api_key_sha256: 64 lowercase hex digits")
        key_digest = bytes.fromhex(digest)
    url = raw.get("webhook_url", "")
    if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
        raise ConfigError(f"{where}.webhook_url: an http(s) URL")
    secrets = raw.get("webhook_secrets", [])
    if not isinstance(secrets, list) or not all(isinstance(s, str) and s for s in secrets):
        raise ConfigError(f"{where}.webhook_secrets: a list of strings")
    if url and not secrets:
        raise ConfigError(f"{where}.webhook_secrets: required with webhook_url")
    return Application(app_id, key_digest, url, tuple(secrets))


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}]: expected a table")
    return value


def _number(raw: Mapping[str, Any], key: str, setting: str, default: float, minimum: float) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{setting}: a number >= {minimum}")
    return value


def from_mapping(raw: Mapping[str, Any], base: GatewayConfig | None = None) -> GatewayConfig:
    """Build a config from parsed TOML (or an equivalent mapping)."""
    cfg = base or GatewayConfig()
    grpc = _section(raw, "grpc")
    esl = _section(raw, "esl")
    ops = _section(raw, "operations")
    hooks = _section(raw, "webhooks")
    rest = _section(raw, "rest")
    apps_raw = raw.get("applications", None)
    apps = cfg.applications
    if apps_raw is not None:
        if not isinstance(apps_raw, list):
            raise ConfigError("applications: expected an array of tables")
        apps = tuple(_application(a, i) for i, a in enumerate(apps_raw))
        ids = [a.app_id for a in apps]
        if len(set(ids)) != len(ids):
            raise ConfigError("applications: duplicate id")
    app_var = esl.get("app_variable", cfg.esl.app_variable)
    if not isinstance(app_var, str) or not re.match(r"^[A-Za-z0-9_]{1,64}$", app_var):
        raise ConfigError("esl.app_variable: 1-64 of [A-Za-z0-9_]")
    return replace(
        cfg,
        grpc_listen=Address.parse(grpc["listen"], "grpc.listen") if "listen" in grpc else cfg.grpc_listen,
        grpc_rate_limit_per_s=int(
            _number(grpc, "rate_limit_per_s", "grpc.rate_limit_per_s", cfg.grpc_rate_limit_per_s, 0)
        ),
        esl=EslConfig(
            listen=Address.parse(esl["listen"], "esl.listen") if "listen" in esl else cfg.esl.listen,
            app_variable=app_var,
            reply_timeout_ms=int(
                _number(esl, "reply_timeout_ms", "esl.reply_timeout_ms", cfg.esl.reply_timeout_ms, 1)
            ),
            max_connections=int(
                _number(esl, "max_connections", "esl.max_connections", cfg.esl.max_connections, 1)
            ),
            allow=_allow(esl, cfg.esl.allow),
            max_frame_bytes=int(
                _number(esl, "max_frame_bytes", "esl.max_frame_bytes", cfg.esl.max_frame_bytes, 65536)
            ),
            partial_frame_timeout_ms=int(
                _number(
                    esl,
                    "partial_frame_timeout_ms",
                    "esl.partial_frame_timeout_ms",
                    cfg.esl.partial_frame_timeout_ms,
                    1,
                )
            ),
        ),
        operations=OperationsConfig(
            timeout_ms=int(_number(ops, "timeout_ms", "operations.timeout_ms", cfg.operations.timeout_ms, 1)),
            retention=int(_number(ops, "retention", "operations.retention", cfg.operations.retention, 1)),
        ),
        webhooks=WebhookConfig(
            outbox_path=str(hooks.get("outbox_path", cfg.webhooks.outbox_path)),
            request_timeout_s=float(
                _number(
                    hooks,
                    "request_timeout_s",
                    "webhooks.request_timeout_s",
                    cfg.webhooks.request_timeout_s,
                    0.001,
                )
            ),
            max_attempts=int(
                _number(hooks, "max_attempts", "webhooks.max_attempts", cfg.webhooks.max_attempts, 1)
            ),
            max_age_s=float(_number(hooks, "max_age_s", "webhooks.max_age_s", cfg.webhooks.max_age_s, 1)),
            per_destination_concurrency=int(
                _number(
                    hooks,
                    "per_destination_concurrency",
                    "webhooks.per_destination_concurrency",
                    cfg.webhooks.per_destination_concurrency,
                    1,
                )
            ),
        ),
        rest=RestConfig(
            listen=Address.parse(rest["listen"], "rest.listen") if "listen" in rest else cfg.rest.listen,
            admin=Address.parse(rest["admin"], "rest.admin") if "admin" in rest else cfg.rest.admin,
            rate_limit_per_s=int(
                _number(rest, "rate_limit_per_s", "rest.rate_limit_per_s", cfg.rest.rate_limit_per_s, 1)
            ),
        ),
        applications=apps,
        metrics_listen=_metrics_listen(raw.get("metrics", {}), cfg.metrics_listen),
        simulator=bool(raw.get("simulator", cfg.simulator)),
        log_level=str(raw.get("log_level", cfg.log_level)).upper(),
    )


def _metrics_listen(raw: Any, default: Address | None) -> Address | None:
    if not isinstance(raw, Mapping):
        raise ConfigError("[metrics]: expected a table")
    if "listen" not in raw:
        return default
    value = raw["listen"]
    if value in ("", "off"):
        return None
    if not isinstance(value, str):
        raise ConfigError('metrics.listen: host:port, or "off"')
    return Address.parse(value, "metrics.listen")


def load_file(path: Path, base: GatewayConfig | None = None) -> GatewayConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    return from_mapping(raw, base)
