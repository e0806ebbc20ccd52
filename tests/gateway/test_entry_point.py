"""Configuration merging of the entry point, and the metrics endpoint."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from callcontrol.__main__ import _parser, build_config
from callcontrol.config import DEMO_APP_ID, Address, ConfigError
from callcontrol.events import CallInitiated, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from tests.conftest import next_event

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway.example.toml"


def test_without_a_config_file_it_is_the_demo_with_safe_defaults() -> None:
    cfg = build_config(_parser().parse_args([]), {})
    assert cfg.simulator is True
    assert [a.app_id for a in cfg.applications] == [DEMO_APP_ID]
    assert (str(cfg.grpc_listen), str(cfg.esl.listen), str(cfg.rest.listen)) == (
        "127.0.0.1:50051",
        "127.0.0.1:8084",
        "127.0.0.1:8080",
    )


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        '[grpc]\nlisten = "127.0.0.1:6000"\n[esl]\nlisten = "0.0.0.0:8084"\n'
        '[[applications]]\nid = "billing"\napi_key = "0123456789abcdef"\n'
    )
    env = {"CALLCONTROL_CONFIG": str(config), "CALLCONTROL_GRPC_LISTEN": "127.0.0.1:6001"}
    cfg = build_config(_parser().parse_args(["--esl-listen", "127.0.0.1:9000"]), env)
    assert cfg.simulator is False  # a real deployment starts no simulator unless asked
    assert cfg.grpc_listen == Address("127.0.0.1", 6001)
    assert cfg.esl.listen == Address("127.0.0.1", 9000)
    assert [a.app_id for a in cfg.applications] == ["billing"]


def test_the_example_configuration_loads() -> None:
    cfg = build_config(_parser().parse_args(["--config", str(EXAMPLE)]), {})
    assert cfg.esl.app_variable == "call_control_app_id"
    assert cfg.applications


def test_a_bad_setting_is_named(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[grpc]\nlisten = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"grpc\.listen"):
        build_config(_parser().parse_args(["--config", str(config)]), {})


async def test_metrics_endpoint_counts_sessions_and_webhooks(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    assert gateway.metrics_address is not None
    url = f"http://{gateway.metrics_address}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        text = await response.text()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["callcontrol_sessions_live"] == "1.0"
    assert "callcontrol_webhook_attempts_total" in lines
    assert "# TYPE callcontrol_webhook_attempt_latency_seconds histogram" in text
