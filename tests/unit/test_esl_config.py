"""The Event Socket limits as settings: defaults, the example file, and clear errors."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from callcontrol.config import ConfigError, EslConfig, from_mapping

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway.example.toml"


def test_defaults_protect_the_process() -> None:
    esl = EslConfig()
    assert esl.allow_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert (esl.max_connections, esl.max_frame_bytes, esl.partial_frame_timeout_ms) == (10000, 1 << 20, 5000)


def test_the_example_file_states_the_defaults() -> None:
    example = tomllib.loads(EXAMPLE.read_text())["esl"]
    assert from_mapping({"esl": example}).esl == EslConfig(app_variable=example["app_variable"])


def test_settings_are_read_from_the_file() -> None:
    esl = from_mapping(
        {
            "esl": {
                "allow": ["10.0.0.0/24", "fd00::/8"],
                "max_frame_bytes": 65536,
                "partial_frame_timeout_ms": 250,
            }
        }
    ).esl
    assert esl.allow == ("10.0.0.0/24", "fd00::/8")
    assert (esl.max_frame_bytes, esl.partial_frame_timeout_ms) == (65536, 250)


@pytest.mark.parametrize(
    ("esl", "named"),
    [
        ({"allow": "127.0.0.1/32"}, "esl.allow"),
        ({"allow": []}, "esl.allow"),
        ({"allow": ["127.0.0.1/8"]}, "esl.allow"),  # host bits set: a typo, not a network
        ({"allow": ["localhost"]}, "esl.allow"),
        ({"allow": [2130706433]}, "esl.allow"),
        ({"max_frame_bytes": 100}, "esl.max_frame_bytes"),
        ({"partial_frame_timeout_ms": 0}, "esl.partial_frame_timeout_ms"),
    ],
)
def test_a_bad_limit_is_named(esl: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        from_mapping({"esl": esl})


def test_a_bad_allow_list_is_refused_however_the_config_is_built() -> None:
    with pytest.raises(ConfigError, match=r"esl\.allow"):
        EslConfig(allow=("not a network",))
