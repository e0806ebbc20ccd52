"""Configuration as data: frozen dataclasses validated at start-up.

Sources, later ones winning: built-in defaults, a TOML file, environment
variables (``CALLCONTROL_*``), command-line flags. Only the entry point reads
the environment; everything else receives a ``GatewayConfig``. Errors name the
setting that is wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import ipaddress
import math
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

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
    # After a linger notice that came before CHANNEL_HANGUP_COMPLETE, how long to
    # wait for it before releasing the call (FreeSWITCH keeps the channel meanwhile).
    linger_wait_ms: int = 1500
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


@dataclass(frozen=True, slots=True)
class OperationsConfig:
    # Deadline of the answer command (the spec's 2 s).
    timeout_ms: int = 2000
    # Finished operations kept for Get/Watch and idempotency, per application
    # (one app's burst never evicts another's), oldest dropped first.
    retention_per_app: int = 10000
    # Commands in progress at once, per application and per session (over: RESOURCE_EXHAUSTED / 429).
    max_in_progress_per_app: int = 1000
    max_in_progress_per_session: int = 16
    # Open WatchOperation streams per application.
    max_watchers_per_app: int = 1000


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    # SQLite file of the durable outbox; ":memory:" keeps nothing across restarts.
    outbox_path: str = "callcontrol-outbox.db"
    request_timeout_s: float = 5.0
    max_attempts: int = 12
    max_age_s: float = 24 * 3600.0
    # Requests at once per application (each application is its own
    # destination, even when two share a webhook_url).
    per_destination_concurrency: int = 4


@dataclass(frozen=True, slots=True)
class GrpcTlsConfig:
    # PEM certificate chain and key of the gRPC server; both empty: plaintext.
    cert_file: str = ""
    key_file: str = ""
    # PEM CA bundle; set, every client must present a certificate it signed (mTLS).
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True, slots=True)
class RestTlsConfig:
    # PEM certificate chain and key Envoy serves REST with; both empty: plaintext.
    cert_file: str = ""
    key_file: str = ""
    # When the gRPC server uses TLS: the CA Envoy verifies it with, and the client
    # certificate Envoy presents to it if grpc.tls.client_ca_file asks for one.
    upstream_ca_file: str = ""
    upstream_cert_file: str = ""
    upstream_key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True, slots=True)
class RestConfig:
    # Envoy's REST listener and admin (admin is always loopback).
    listen: Address = Address("127.0.0.1", 8080)
    admin: Address = Address("127.0.0.1", 9901)
    tls: RestTlsConfig = field(default_factory=RestTlsConfig)
    # Envoy's JSON access log: "stderr", "stdout", "off", or a file path (its own
    # stream, apart from the banner on stdout).
    access_log: str = "stderr"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    # Requests per second per application and group, gRPC and REST counted together
    # in the server after authentication (0: off). A bucket holds one second of them.
    rate_limit_per_s: int = 50
    # Failed authentications per minute per client address, in bursts of as many;
    # past it every request from the address is refused 429 until it refills (0: off).
    auth_failures_per_minute: int = 60


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    # Redis shared by the replicas ("redis://host:port/db"); empty: a single
    # gateway with its in-process stores and local outbox (nothing else changes).
    redis_url: str = ""
    # This replica's name in the cluster; empty: host name and process id.
    replica_id: str = ""
    # The gRPC address other replicas forward to; empty: the bound grpc.listen.
    advertise: str = ""
    # Heartbeat period, and how long a replica that stopped beating is still live.
    heartbeat_ms: int = 1000
    expiry_ms: int = 3000
    # Deadline of a request forwarded to the replica holding the call.
    forward_timeout_ms: int = 5000

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    grpc_listen: Address = Address("127.0.0.1", 50051)
    # TLS of the gRPC server ([grpc.tls]).
    grpc_tls: GrpcTlsConfig = field(default_factory=GrpcTlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    esl: EslConfig = field(default_factory=EslConfig)
    operations: OperationsConfig = field(default_factory=OperationsConfig)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    rest: RestConfig = field(default_factory=RestConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    applications: tuple[Application, ...] = ()
    # Prometheus text endpoint (GET /metrics); None turns it off.
    metrics_listen: Address | None = Address("127.0.0.1", 9464)
    # Address of a real FreeSWITCH is not needed for outbound ESL; this flag
    # only tells the run script whether to start the simulator.
    simulator: bool = True
    log_level: str = "INFO"
    # "text" (one line per record, for a terminal) or "json" (one object per line).
    log_format: Literal["text", "json"] = "text"

    def application(self, app_id: str) -> Application | None:
        for app in self.applications:
            if app.app_id == app_id:
                return app
        return None


def replica_id(cfg: GatewayConfig) -> str:
    """This replica's name in the cluster: cluster.replica_id, else host name and process id."""
    return cfg.cluster.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def demo_application(webhook_url: str = "") -> Application:
    return Application(
        app_id=DEMO_APP_ID,
        api_key_sha256=hash_api_key(DEMO_API_KEY),
        webhook_url=webhook_url,
        webhook_secrets=(DEMO_WEBHOOK_SECRET,),
    )


def is_demo(cfg: GatewayConfig) -> bool:
    """Whether the demo application with its published key is configured (and so usable)."""
    app = cfg.application(DEMO_APP_ID)
    return app is not None and app.api_key_sha256 == hash_api_key(DEMO_API_KEY)


# --- Loading ---------------------------------------------------------------
#
# The dataclasses above are the schema. One walker reads the TOML file, the
# environment and flags against their type hints, so a new field is a new
# setting with no further code: its TOML key is the field name inside its
# section's table, its environment variable CALLCONTROL_<SECTION>_<KEY>.
# No library does strict TOML-to-frozen-dataclass with these error messages
# without a second schema to keep in step, so this is our own (small) code.

ENV_PREFIX = "CALLCONTROL_"
# CALLCONTROL_* variables that are not settings.
ENV_NOT_SETTINGS = frozenset({ENV_PREFIX + "CONFIG"})
# Top-level fields named "<section>_<key>" that TOML spells as [section] key.
_FLAT_SECTIONS = ("grpc", "metrics")
# Numbers must be finite and >= 0, or at least the minimum listed here.
_MINIMUM: dict[str, float] = {
    "esl.reply_timeout_ms": 1,
    "esl.max_connections": 1,
    "esl.max_frame_bytes": 65536,
    "esl.partial_frame_timeout_ms": 1,
    "operations.timeout_ms": 1,
    "operations.retention_per_app": 1,
    "operations.max_in_progress_per_app": 1,
    "operations.max_in_progress_per_session": 1,
    "operations.max_watchers_per_app": 1,
    "webhooks.request_timeout_s": 0.001,
    "webhooks.max_attempts": 1,
    "webhooks.max_age_s": 1,
    "webhooks.per_destination_concurrency": 1,
    "cluster.heartbeat_ms": 1,
    "cluster.expiry_ms": 1,
    "cluster.forward_timeout_ms": 1,
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE, _FALSE = ("true", "1", "on"), ("false", "0", "off")
_TOML_TYPES = {str: "a string", int: "an integer", float: "a float", bool: "a boolean", list: "an array"}
_APPLICATION_KEYS = ("id", "api_key", "api_key_sha256", "webhook_url", "webhook_secrets")


@dataclass(frozen=True, slots=True)
class Setting:
    """One leaf of the schema."""

    key: str  # dotted TOML key, e.g. "grpc.listen"
    path: tuple[str, ...]  # attribute names from GatewayConfig, e.g. ("grpc_listen",)
    hint: Any  # the field's type

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace(".", "_")


# A table's layout: TOML key -> (field name, type), or for a flat section a
# nested {key: (field name, type)}.
_Entry = tuple[str, Any]
_Layout = dict[str, "_Entry | dict[str, _Entry]"]


@functools.cache
def _layout(cls: type) -> _Layout:
    hints = typing.get_type_hints(cls)
    out: _Layout = {}
    for f in dataclasses.fields(cls):
        section, _, rest = f.name.partition("_")
        if cls is GatewayConfig and section in _FLAT_SECTIONS and rest:
            table = out.setdefault(section, {})
            if not isinstance(table, dict):
                raise TypeError(f"config schema: [{section}] is both a field and a section")
            table[rest] = (f.name, hints[f.name])
        elif f.name in out:
            raise TypeError(f"config schema: [{f.name}] is both a field and a section")
        else:
            out[f.name] = (f.name, hints[f.name])
    return out


def _is_table(hint: Any) -> bool:
    # Address is a dataclass too, but a leaf written "host:port".
    return isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint is not Address


def _is_applications(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (Application,)


@functools.cache
def settings() -> tuple[Setting, ...]:
    """Every scalar setting (all but [[applications]]), in schema order."""
    out: list[Setting] = []

    def walk(cls: type, prefix: str, path: tuple[str, ...]) -> None:
        for key, entry in _layout(cls).items():
            items = entry.items() if isinstance(entry, dict) else [("", entry)]
            for sub, (name, hint) in items:
                dotted = prefix + key + (f".{sub}" if sub else "")
                if _is_table(hint):
                    walk(hint, dotted + ".", (*path, name))
                elif not _is_applications(hint):
                    out.append(Setting(dotted, (*path, name), hint))

    walk(GatewayConfig, "", ())
    return tuple(out)


def setting(key: str) -> Setting:
    for s in settings():
        if s.key == key:
            return s
    raise KeyError(key)


# Settings that moved: a stale key must not be silently ignored, nor merely "unknown".
_MOVED = {
    "grpc.rate_limit_per_s": "limits.rate_limit_per_s (gRPC and REST)",
    "rest.rate_limit_per_s": "limits.rate_limit_per_s (gRPC and REST)",
    # The old global pool let one application evict another's operations.
    "operations.retention": "operations.retention_per_app",
}


def _unknown(key: str, known: Iterable[str]) -> ConfigError:
    if key in _MOVED:
        return ConfigError(f"{key}: moved to {_MOVED[key]}")
    prefix, _, last = key.rpartition(".")
    close = difflib.get_close_matches(last, list(known), n=1)
    hint = f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
    return ConfigError(f"{key}: unknown setting{hint}")


def _got(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    return f"{_TOML_TYPES.get(type(value), type(value).__name__)} {value!r}"


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """A TOML value (or the text of a string-typed setting) as the field's type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"config schema: {key}: unsupported type {hint!r}")
        if value in ("off", ""):
            return None
        return _coerce(inner[0], value, key)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {_got(value)}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array, got {_got(value)}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a boolean (true or false), got {_got(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_got(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_got(value)}")
        return float(value)
    if hint in (str, Address, Path):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_got(value)}")
        if hint is Address:
            return Address.parse(value, key)
        return Path(value) if hint is Path else value
    raise TypeError(f"config schema: {key}: unsupported type {hint!r}")


def _from_text(hint: Any, text: str, key: str) -> Any:
    """The value of an environment variable or flag as the field's type."""
    word = text.strip().lower()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args and word in ("off", ""):
        return None
    union = origin in (typing.Union, types.UnionType)
    base = next((a for a in args if a is not type(None)), hint) if union else hint
    if base is bool:
        if word not in _TRUE + _FALSE:
            raise ConfigError(f"{key}: expected one of {'/'.join(_TRUE + _FALSE)}, got {text!r}")
        return word in _TRUE
    if base is int:
        if not re.fullmatch(r"[+-]?[0-9]+", word):
            raise ConfigError(f"{key}: expected an integer, got {text!r}")
        return int(word)
    if base is float:
        try:
            return float(word)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if typing.get_origin(base) is tuple:
        raise ConfigError(f"{key}: a list; set it in the configuration file")
    return _coerce(hint, text, key)


def _check(key: str, value: Any) -> Any:
    """Range and format rules beyond the type."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        minimum = _MINIMUM.get(key, 0)
        if not math.isfinite(value) or value < minimum:
            raise ConfigError(f"{key}: expected a number >= {minimum}, got {value!r}")
    if key == "esl.app_variable" and not re.fullmatch(r"[A-Za-z0-9_]{1,64}", value):
        raise ConfigError(f"{key}: 1-64 of [A-Za-z0-9_], got {value!r}")
    if key == "rest.access_log" and not value.strip():
        raise ConfigError(f'{key}: "stderr", "stdout", "off" or a file path, got {value!r}')
    if key == "log_level":
        value = value.upper()
        if value not in _LOG_LEVELS:
            raise ConfigError(f"{key}: expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return value


def _merge(obj: Any, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.')}: expected a table, got {_got(raw)}")
    cls: type = type(obj)
    layout = _layout(cls)
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        entry = layout.get(key)
        if entry is None:
            raise _unknown(prefix + key, layout)
        if isinstance(entry, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}{key}: expected a table, got {_got(value)}")
            for sub, sub_value in value.items():
                if sub not in entry:
                    raise _unknown(f"{prefix}{key}.{sub}", entry)
                name, hint = entry[sub]
                changes[name] = _value(getattr(obj, name), hint, sub_value, f"{prefix}{key}.{sub}")
        else:
            name, hint = entry
            changes[name] = _value(getattr(obj, name), hint, value, prefix + key)
    return replace(obj, **changes)


def _value(current: Any, hint: Any, value: Any, key: str) -> Any:
    if _is_table(hint):
        return _merge(current, value, key + ".")
    if _is_applications(hint):
        return _applications(value)
    return _check(key, _coerce(hint, value, key))


def _applications(raw: Any) -> tuple[Application, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"applications: expected an array of tables, got {_got(raw)}")
    apps = tuple(_application(a, i) for i, a in enumerate(raw))
    ids = [a.app_id for a in apps]
    if len(set(ids)) != len(ids):
        raise ConfigError("applications: duplicate id")
    return apps


def _application(raw: Any, index: int) -> Application:
    where = f"applications[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table, got {_got(raw)}")
    for key in raw:
        if key not in _APPLICATION_KEYS:
            raise _unknown(f"{where}.{key}", _APPLICATION_KEYS)
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


def _set(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    name, *rest = path
    return replace(obj, **{name: _set(getattr(obj, name), tuple(rest), value) if rest else value})


def apply_text(cfg: GatewayConfig, key: str, text: str, source: str) -> GatewayConfig:
    """Set one setting from text (an environment variable or a flag, named by ``source``)."""
    s = setting(key)
    value = _check(key, _from_text(s.hint, text, f"{source} ({key})"))
    updated: GatewayConfig = _set(cfg, s.path, value)
    return updated


def apply_env(cfg: GatewayConfig, env: Mapping[str, str]) -> GatewayConfig:
    """Apply every ``CALLCONTROL_*`` variable; an unknown one is an error (a typo, surely)."""
    by_name = {s.env: s for s in settings()}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        s = by_name.get(name)
        if s is None:
            close = difflib.get_close_matches(name, [*by_name, *ENV_NOT_SETTINGS], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"environment variable {name}: unknown setting{hint}")
        cfg = apply_text(cfg, s.key, env[name], name)
    return cfg


def _tls_pair(cert: str, key: str, cert_key: str, key_key: str) -> None:
    if bool(cert) != bool(key):
        raise ConfigError(f"{cert_key}, {key_key}: set both or neither")
    for path, name in ((cert, cert_key), (key, key_key)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file: {path}")


def validate(cfg: GatewayConfig) -> GatewayConfig:
    """Rules across settings; run once all sources are merged."""
    g, r = cfg.grpc_tls, cfg.rest.tls
    _tls_pair(g.cert_file, g.key_file, "grpc.tls.cert_file", "grpc.tls.key_file")
    _tls_pair(r.cert_file, r.key_file, "rest.tls.cert_file", "rest.tls.key_file")
    _tls_pair(
        r.upstream_cert_file, r.upstream_key_file, "rest.tls.upstream_cert_file", "rest.tls.upstream_key_file"
    )
    for path, name in (
        (g.client_ca_file, "grpc.tls.client_ca_file"),
        (r.upstream_ca_file, "rest.tls.upstream_ca_file"),
    ):
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file: {path}")
    if g.client_ca_file and not g.enabled:
        raise ConfigError("grpc.tls.client_ca_file: needs grpc.tls.cert_file and key_file")
    return cfg


def from_mapping(raw: Mapping[str, Any], base: GatewayConfig | None = None) -> GatewayConfig:
    """Build a config from parsed TOML (or an equivalent mapping), strictly."""
    cfg: GatewayConfig = _merge(base or GatewayConfig(), raw, "")
    return validate(cfg)


def load_file(path: Path, base: GatewayConfig | None = None) -> GatewayConfig:
    """The file over ``base``; call ``validate`` once the environment and flags are applied too."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    cfg: GatewayConfig = _merge(base or GatewayConfig(), raw, "")
    return cfg
