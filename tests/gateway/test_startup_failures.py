"""Every start-up failure is one line on stderr naming its cause, exit status 2 (real subprocesses)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callcontrol.config import Address
from callcontrol.gateway import Gateway
from callcontrol.startup import StartupError
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]


def _toml(tmp_path: Path, **sections: str) -> Path:
    """A deployment config on ephemeral loopback ports; ``sections`` replace or add tables."""
    tables = {
        "grpc": 'listen = "127.0.0.1:0"',
        "esl": 'listen = "127.0.0.1:0"',
        "metrics": 'listen = "off"',
        "rest": 'listen = "127.0.0.1:0"\nadmin = "127.0.0.1:0"',
        "webhooks": f'outbox_path = "{tmp_path / "outbox.db"}"',
        **{name: body for name, body in sections.items() if name != "_app"},
    }
    text = "".join(f"[{name}]\n{body}\n" for name, body in tables.items())
    text += '[[applications]]\nid = "billing"\napi_key = "0123456789abcdef"\n'
    text += sections.get("_app", "")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


async def _run(config: Path, *flags: str) -> tuple[int, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callcontrol", "--config", str(config), *flags,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode(errors="replace").splitlines()


def _assert_one_line_failure(status: int, lines: list[str], *needles: str) -> None:
    text = "\n".join(lines)
    assert status == 2, text
    assert "Traceback" not in text, text
    last = lines[-1]
    assert last.startswith(("callcontrol: cannot start: ", "configuration error: ")), text
    for needle in needles:
        assert needle in last, text


@pytest.fixture(params=[False, True], ids=["plain", "reuseport"])
def held_port(request: pytest.FixtureRequest) -> Iterator[Address]:
    """A loopback port another process listens on; with SO_REUSEPORT too, as grpcio's default does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if request.param:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield Address("127.0.0.1", sock.getsockname()[1])


@pytest.mark.parametrize(
    ("table", "setting"),
    [("grpc", "grpc.listen"), ("esl", "esl.listen"), ("metrics", "metrics.listen")],
)
async def test_a_listener_whose_port_is_taken_is_named(
    tmp_path: Path, held_port: Address, table: str, setting: str
) -> None:
    config = _toml(tmp_path, **{table: f'listen = "{held_port}"'})
    status, lines = await _run(config, "--no-envoy")
    _assert_one_line_failure(status, lines, setting, str(held_port), "Address already in use")


@pytest.mark.parametrize("key", ["listen", "admin"])
async def test_an_envoy_port_that_is_taken_is_named(tmp_path: Path, held_port: Address, key: str) -> None:
    other = "admin" if key == "listen" else "listen"
    config = _toml(tmp_path, rest=f'{key} = "{held_port}"\n{other} = "127.0.0.1:0"')
    status, lines = await _run(config)
    _assert_one_line_failure(status, lines, f"rest.{key}", str(held_port), "Address already in use")


async def test_the_outbox_held_by_another_gateway_is_named(tmp_path: Path) -> None:
    config = _toml(tmp_path)
    with (tmp_path / "outbox.db.lock").open("ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        status, lines = await _run(config, "--no-envoy")
    _assert_one_line_failure(status, lines, "webhooks.outbox_path", "already in use")


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"grpc": 'listen = "nowhere"'}, "grpc.listen"),
        ({"operations": "timeout_ms = -1"}, "operations.timeout_ms"),
        (
            {
                "_app": 'webhook_url = "http://127.0.0.1:1/hooks"\n'
                'webhook_secrets = ["whsec_c2hvcnQ="]\n'  # 5 bytes: too short to sign with
            },
            "webhook_secrets",
        ),
    ],
)
async def test_a_bad_setting_is_named(tmp_path: Path, sections: dict[str, str], needle: str) -> None:
    status, lines = await _run(_toml(tmp_path, **sections), "--no-envoy")
    _assert_one_line_failure(status, lines, needle)


async def test_an_unknown_log_level_is_named(tmp_path: Path) -> None:
    status, lines = await _run(_toml(tmp_path), "--no-envoy", "--log-level", "LOUD")
    _assert_one_line_failure(status, lines, "log_level")


async def test_a_second_gateway_on_the_same_grpc_port_does_not_start() -> None:
    # grpcio turns SO_REUSEPORT on by default: the second would bind and share the port.
    first = Gateway(make_config())
    await first.start()
    try:
        assert first.grpc_address is not None
        second = Gateway(make_config(grpc_listen=first.grpc_address))
        with pytest.raises(StartupError, match=r"grpc\.listen .*Address already in use"):
            await second.start()
    finally:
        await first.shutdown(grace=0)
