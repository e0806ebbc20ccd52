"""Log lines: one record is one line whatever FreeSWITCH or a client sends; JSON on request."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from callcontrol import logs
from callcontrol.__main__ import _parser, build_config
from callcontrol.config import ConfigError
from callcontrol.events import CallInitiated, CommandResult, Subscription
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, next_event

# What FreeSWITCH sends as %0A, %0D, %E2%80%A8 ... once URL-decoded.
FORGED = "\nCRITICAL forged\r\nERROR also forged\u2028WARNING and this\x1b[2J"
LONG_ID = "request by admin CRITICAL " * 20
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


@pytest.fixture
def log_output(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The callcontrol loggers, formatted as the entry point formats them, into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(request.param))
    logger = logging.getLogger("callcontrol")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def _call_with_forged_caller_id(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> str:
    call = await simulator.place_call(caller_number=FORGED, caller_name=FORGED)
    await next_event(events, CallInitiated, call.uuid)
    # gRPC metadata cannot hold control characters, but a request id can still be
    # long, spaced text meant for the log: it is replaced by a fresh id.
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=call.uuid),
            metadata=(("x-app-id", "demo-app"), ("x-api-key", "wrong-key-123"), ("x-request-id", LONG_ID)),
        )
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await next_event(events, CommandResult, call.uuid)
    return call.uuid


@pytest.mark.parametrize("log_output", ["text"], indirect=True)
async def test_a_forged_caller_id_cannot_forge_a_text_log_line(
    log_output: io.StringIO, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    session_id = await _call_with_forged_caller_id(simulator, stubs, events)

    lines = log_output.getvalue().splitlines()
    assert lines
    assert [line for line in lines if not TEXT_LINE.match(line)] == []
    [call_line] = [line for line in lines if f"call {session_id} for demo-app" in line]
    assert "from \\nCRITICAL forged\\r\\nERROR also forged\\u2028WARNING and this\\x1b[2J to" in call_line
    assert "\x1b" not in log_output.getvalue()


@pytest.mark.parametrize("log_output", ["json"], indirect=True)
async def test_json_logs_are_one_object_per_line_with_the_ids_as_fields(
    log_output: io.StringIO, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    session_id = await _call_with_forged_caller_id(simulator, stubs, events)

    text = log_output.getvalue()
    assert text.isascii()
    records = [json.loads(line) for line in text.splitlines()]
    [call] = [r for r in records if r["message"].startswith(f"call {session_id} for demo-app")]
    assert FORGED in call["message"]
    assert call["session_id"] == session_id
    assert call["level"] == "INFO"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", call["time"])
    assert call["logger"] == "callcontrol.control"
    rpcs = [r for r in records if r["logger"] == "callcontrol.api.interceptors"]
    assert rpcs
    assert all(re.fullmatch(r"[0-9a-f-]{36}", r["request_id"]) for r in rpcs)  # LONG_ID was replaced
    assert "request by admin" not in text


def test_text_formatter_keeps_exceptions_on_the_records_line() -> None:
    formatter = logs.TextFormatter()
    try:
        raise ValueError("bad\nCRITICAL forged")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", ("a\u0085b",), None)
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "\n" not in line
    assert "\u0085" not in line
    assert "failed: a\\x85b" in line
    assert "ValueError: bad\\nCRITICAL forged" in line


def test_log_format_comes_from_the_file_the_environment_or_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('log_format = "json"\n[[applications]]\nid = "billing"\napi_key = "0123456789abcdef"\n')
    assert build_config(_parser().parse_args([]), {}).log_format == "text"
    assert build_config(_parser().parse_args(["--config", str(config)]), {}).log_format == "json"
    from_env = build_config(_parser().parse_args([]), {"CALLCONTROL_LOG_FORMAT": "json"})
    assert from_env.log_format == "json"
    from_flag = build_config(
        _parser().parse_args(["--log-format", "text"]), {"CALLCONTROL_LOG_FORMAT": "json"}
    )
    assert from_flag.log_format == "text"
    with pytest.raises(ConfigError, match="log-format"):
        build_config(_parser().parse_args(["--log-format", "xml"]), {})
    config.write_text('log_format = "yaml"\n')
    with pytest.raises(ConfigError, match="log_format"):
        build_config(_parser().parse_args(["--config", str(config)]), {})
