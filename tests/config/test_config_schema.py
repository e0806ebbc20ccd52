"""The strict configuration loader: types, unknown keys, environment, flags."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from callcontrol.__main__ import SETTING_FLAGS, _parser, build_config
from callcontrol.config import (
    Address,
    ConfigError,
    GatewayConfig,
    apply_env,
    from_mapping,
    settings,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway.example.toml"
APP = {"id": "billing", "api_key": "0123456789abcdef"}


def load(toml: str) -> GatewayConfig:
    return from_mapping(tomllib.loads(toml))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('simulator = "false"', r"^simulator: expected a boolean \(true or false\), got a string 'false'$"),
        ("simulator = 0", r"^simulator: expected a boolean"),
        (
            '[limits]\nrate_limit_per_s = "50"',
            r"^limits\.rate_limit_per_s: expected an integer, got a string",
        ),
        (
            "[limits]\nrate_limit_per_s = true",
            r"^limits\.rate_limit_per_s: expected an integer, got a boolean",
        ),
        ("[esl]\nreply_timeout_ms = 1.5", r"^esl\.reply_timeout_ms: expected an integer, got a float"),
        ("[webhooks]\nmax_age_s = nan", r"^webhooks\.max_age_s: expected a number >= 1"),
        ("[webhooks]\noutbox_path = 3", r"^webhooks\.outbox_path: expected a string, got an integer 3"),
        ("[rest]\nlisten = 8080", r"^rest\.listen: expected a string, got an integer"),
        ("[metrics]\nlisten = false", r"^metrics\.listen: expected a string"),
        ('log_level = "LOUD"', r"^log_level: expected one of DEBUG"),
        ("esl = 5", r"^esl: expected a table, got an integer 5"),
    ],
)
def test_a_wrong_type_is_an_error_naming_the_key_and_the_type(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(toml)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[grpc]\nlistn = "127.0.0.1:1"', r"^grpc\.listn: unknown setting; did you mean grpc\.listen\?$"),
        (
            "[webhooks]\nmax_attempt = 3",
            r"^webhooks\.max_attempt: unknown setting; did you mean webhooks\.max_attempts\?",
        ),
        ("simulater = true", r"^simulater: unknown setting; did you mean simulator\?$"),
        (
            "[grpc.tls]\ncert = 'x'",
            r"^grpc\.tls\.cert: unknown setting; did you mean grpc\.tls\.cert_file\?$",
        ),
        ("[nonsense]\nx = 1", r"^nonsense: unknown setting$"),
        (
            '[[applications]]\nid = "a"\napi_key = "0123456789"\nwebhook_ulr = "http://x"',
            r"^applications\[0\]\.webhook_ulr: unknown setting; "
            r"did you mean applications\[0\]\.webhook_url\?$",
        ),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(toml)


def test_well_typed_values_load() -> None:
    cfg = load(
        "simulator = true\nlog_level = 'debug'\n"
        "[grpc]\nlisten = '0.0.0.0:6000'\n[limits]\nrate_limit_per_s = 0\n"
        "[webhooks]\nmax_age_s = 60\n"  # an integer where a float is wanted is fine
        "[metrics]\nlisten = 'off'\n"
    )
    assert cfg.simulator is True
    assert cfg.log_level == "DEBUG"
    assert cfg.grpc_listen == Address("0.0.0.0", 6000)
    assert cfg.limits.rate_limit_per_s == 0
    assert cfg.webhooks.max_age_s == 60.0
    assert isinstance(cfg.webhooks.max_age_s, float)
    assert cfg.metrics_listen is None


def test_every_setting_has_a_supported_type_and_its_own_environment_variable() -> None:
    # A field someone adds with a type the loader cannot read fails here, not in production.
    names = [s.env for s in settings()]
    assert len(names) == len(set(names))
    keys = {s.key for s in settings()}
    assert {"grpc.listen", "esl.listen", "rest.listen", "rest.admin", "metrics.listen"} <= keys
    assert {"webhooks.outbox_path", "grpc.tls.cert_file", "rest.tls.cert_file", "simulator"} <= keys
    defaults = GatewayConfig()
    for s in settings():
        value: object = defaults
        for name in s.path:
            value = getattr(value, name)
        # The default, written as TOML would have it, loads back to itself.
        assert from_mapping(_nest(s.key, _as_toml(value))) == defaults, s.key


def _as_toml(value: object) -> object:
    if value is None:
        return "off"
    if isinstance(value, Address):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _nest(key: str, value: object) -> dict[str, object]:
    *tables, last = key.split(".")
    out: dict[str, object] = {last: value}
    for table in reversed(tables):
        out = {table: out}
    return out


def test_every_listener_and_the_outbox_have_an_environment_variable_and_a_flag(tmp_path: Path) -> None:
    env = {
        "CALLCONTROL_GRPC_LISTEN": "127.0.0.1:7001",
        "CALLCONTROL_ESL_LISTEN": "127.0.0.1:7002",
        "CALLCONTROL_REST_LISTEN": "127.0.0.1:7003",
        "CALLCONTROL_REST_ADMIN": "127.0.0.1:7004",
        "CALLCONTROL_METRICS_LISTEN": "127.0.0.1:7005",
        "CALLCONTROL_WEBHOOKS_OUTBOX_PATH": str(tmp_path / "env.db"),
    }
    cfg = build_config(_parser().parse_args([]), env)
    got = (cfg.grpc_listen, cfg.esl.listen, cfg.rest.listen, cfg.rest.admin, cfg.metrics_listen)
    assert [str(a) for a in got] == [f"127.0.0.1:700{n}" for n in range(1, 6)]
    assert cfg.webhooks.outbox_path == str(tmp_path / "env.db")

    flags = [
        "--grpc-listen", "127.0.0.1:8001",
        "--esl-listen", "127.0.0.1:8002",
        "--rest-listen", "127.0.0.1:8003",
        "--rest-admin", "127.0.0.1:8004",
        "--metrics-listen", "off",
        "--outbox-path", str(tmp_path / "flag.db"),
    ]  # fmt: skip
    cfg = build_config(_parser().parse_args(flags), env)  # flags win over the environment
    flagged = (cfg.grpc_listen, cfg.esl.listen, cfg.rest.listen, cfg.rest.admin)
    assert [str(a) for a in flagged] == [f"127.0.0.1:800{n}" for n in range(1, 5)]
    assert cfg.metrics_listen is None
    assert cfg.webhooks.outbox_path == str(tmp_path / "flag.db")
    assert set(SETTING_FLAGS.values()) >= {"grpc.listen", "esl.listen", "rest.listen", "rest.admin"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("ON", True), ("false", False), ("0", False), ("off", False)],
)
def test_booleans_from_the_environment(text: str, expected: bool) -> None:
    assert (
        apply_env(GatewayConfig(simulator=not expected), {"CALLCONTROL_SIMULATOR": text}).simulator
        is expected
    )


@pytest.mark.parametrize("text", ["yes", "no", "", "flase", "2"])
def test_other_boolean_words_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^CALLCONTROL_SIMULATOR \(simulator\): expected one of true/1/on"):
        apply_env(GatewayConfig(), {"CALLCONTROL_SIMULATOR": text})


def test_environment_values_are_typed_and_unknown_variables_refused() -> None:
    cfg = apply_env(GatewayConfig(), {"CALLCONTROL_ESL_REPLY_TIMEOUT_MS": "750", "PATH": "/bin"})
    assert cfg.esl.reply_timeout_ms == 750
    with pytest.raises(
        ConfigError, match=r"^CALLCONTROL_ESL_REPLY_TIMEOUT_MS \(esl\.reply_timeout_ms\): expected an integer"
    ):
        apply_env(GatewayConfig(), {"CALLCONTROL_ESL_REPLY_TIMEOUT_MS": "5s"})
    with pytest.raises(ConfigError, match=r"expected a number >= 1"):
        apply_env(GatewayConfig(), {"CALLCONTROL_ESL_REPLY_TIMEOUT_MS": "0"})
    with pytest.raises(
        ConfigError,
        match=r"^environment variable CALLCONTROL_GRPC_LISTN: unknown setting; "
        r"did you mean CALLCONTROL_GRPC_LISTEN\?$",
    ):
        apply_env(GatewayConfig(), {"CALLCONTROL_GRPC_LISTN": "127.0.0.1:1"})


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--rest-admin \(rest\.admin\): expected host:port"):
        build_config(_parser().parse_args(["--rest-admin", "nowhere"]), {})


def test_tls_settings_need_both_files_and_the_files_must_exist(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=r"grpc\.tls\.cert_file, grpc\.tls\.key_file: set both or neither"):
        from_mapping({"grpc": {"tls": {"cert_file": str(cert)}}})
    with pytest.raises(ConfigError, match=r"^rest\.tls\.key_file: no such file"):
        from_mapping({"rest": {"tls": {"cert_file": str(cert), "key_file": str(tmp_path / "missing.pem")}}})
    cfg = from_mapping({"rest": {"tls": {"cert_file": str(cert), "key_file": str(cert)}}})
    assert cfg.rest.tls.enabled
    assert not cfg.grpc_tls.enabled


def test_the_example_configuration_is_strictly_valid() -> None:
    cfg = build_config(_parser().parse_args(["--config", str(EXAMPLE)]), {})
    assert cfg.simulator is False
    assert [a.app_id for a in cfg.applications] == ["billing"]


def test_version_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "callcontrol", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == f"callcontrol {version('callcontrol-gateway')}"


def test_a_setting_split_between_the_file_and_the_environment_is_checked_once_merged(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[grpc.tls]\ncert_file = "{cert}"\n[[applications]]\nid = "a"\napi_key = "0123456789"\n'
    )
    env = {"CALLCONTROL_CONFIG": str(config)}
    with pytest.raises(ConfigError, match="set both or neither"):
        build_config(_parser().parse_args([]), env)
    cfg = build_config(_parser().parse_args([]), {**env, "CALLCONTROL_GRPC_TLS_KEY_FILE": str(cert)})
    assert (cfg.grpc_tls.cert_file, cfg.grpc_tls.key_file) == (str(cert), str(cert))
