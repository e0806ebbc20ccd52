"""The start-up banner tells the truth for the mode it is in."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from callcontrol.__main__ import _parser, build_config
from callcontrol.config import DEMO_API_KEY, Application, hash_api_key, is_demo
from callcontrol.runner import _banner

SID = "6f1c1c32-8a3e-4d0e-9a57-1b2c3d4e5f60"


def test_demo_mode_prints_the_demo_credentials_and_working_curl_lines() -> None:
    cfg = build_config(_parser().parse_args([]), {})
    text = _banner(cfg, "http://127.0.0.1:8080", "127.0.0.1:50051", [SID])
    assert is_demo(cfg)
    assert DEMO_API_KEY in text
    assert f"curl -i -X POST http://127.0.0.1:8080/api/v1/sessions/{SID}/commands/answer" in text


def test_with_a_config_file_there_are_no_demo_credentials_nor_curl_lines(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[[applications]]\nid = "billing"\napi_key = "0123456789abcdef"\n')
    cfg = build_config(_parser().parse_args(["--config", str(config)]), {})
    text = _banner(cfg, "http://127.0.0.1:8080", "127.0.0.1:50051", [])
    assert not is_demo(cfg)
    assert DEMO_API_KEY not in text
    assert "demo-app" not in text
    assert "curl" not in text
    assert "billing" in text
    assert "FreeSWITCH     connects to 127.0.0.1:8084" in text


def test_an_application_named_demo_app_with_its_own_key_is_not_the_demo(tmp_path: Path) -> None:
    cfg = build_config(_parser().parse_args([]), {})
    cfg = replace(cfg, applications=(Application("demo-app", hash_api_key("a-real-secret-key")),))
    assert not is_demo(cfg)
    assert DEMO_API_KEY not in _banner(cfg, "http://127.0.0.1:8080", "127.0.0.1:50051", [SID])
