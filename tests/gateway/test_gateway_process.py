"""The gateway's Envoy dies with it, however it dies; a restart after a crash just works."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from callcontrol import die_with_parent
from callcontrol.config import Address, RestConfig
from callcontrol.rest.envoy_process import EnvoyError, EnvoyProcess
from callcontrol.startup import envoy_cause

ROOT = Path(__file__).resolve().parents[2]
_ENVOY_PID = re.compile(rb"envoy started \(pid (\d+)\)")
_SERVING = re.compile(rb"envoy serving REST on http://(\S+) \(admin http://(\S+)\)")


def _config(tmp_path: Path, rest: Address | str, admin: Address | str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[grpc]\nlisten = "127.0.0.1:0"\n[esl]\nlisten = "127.0.0.1:0"\n[metrics]\nlisten = "off"\n'
        f'[rest]\nlisten = "{rest}"\nadmin = "{admin}"\n'
        f'[webhooks]\noutbox_path = "{tmp_path / "outbox.db"}"\n'
        '[[applications]]\nid = "billing"\napi_key = "0123456789abcdef"\n'
    )
    return path


async def _start(config: Path, log: Path) -> tuple[asyncio.subprocess.Process, re.Match[bytes]]:
    """The gateway with its Envoy, once Envoy serves; the match has Envoy's addresses."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *die_with_parent.wrap([sys.executable, "-m", "callcontrol", "--config", str(config)]),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    start = (await asyncio.to_thread(log.stat)).st_size

    async def serving() -> re.Match[bytes]:
        while True:
            if match := _SERVING.search((await asyncio.to_thread(log.read_bytes))[start:]):
                return match
            assert proc.returncode is None, (await asyncio.to_thread(log.read_text))[-2000:]
            await asyncio.sleep(0.05)  # polling the child's log for Envoy's addresses

    return proc, await asyncio.wait_for(serving(), 30)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (nobody may reap an orphan here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def test_a_sigkilled_gateway_takes_its_envoy_along_and_the_next_start_just_works(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gateway.log"
    first, serving = await _start(_config(tmp_path, "127.0.0.1:0", "127.0.0.1:0"), log)
    rest, admin = Address.parse(serving[1].decode(), "rest"), Address.parse(serving[2].decode(), "admin")
    envoy_match = _ENVOY_PID.search(await asyncio.to_thread(log.read_bytes))
    assert envoy_match is not None
    envoy_pid = int(envoy_match[1])
    try:
        first.send_signal(signal.SIGKILL)  # what the OOM killer does
        assert await first.wait() == -signal.SIGKILL

        async def envoy_gone() -> None:
            while True:
                if _gone(envoy_pid):
                    return
                await asyncio.sleep(0.05)  # polling /proc: nothing else tells us

        await asyncio.wait_for(envoy_gone(), 10)

        # The same ports again, at once: nothing is left holding them.
        second, _ = await _start(_config(tmp_path, rest, admin), log)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(envoy_pid, signal.SIGKILL)  # only if the test failed: do not leak an orphan


async def test_when_envoy_cannot_start_its_own_reason_is_found(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = Address("127.0.0.1", holder.getsockname()[1])
        envoy = EnvoyProcess(
            RestConfig(listen=taken, admin=Address("127.0.0.1", 0)), Address("127.0.0.1", 1), tmp_path
        )
        with pytest.raises(EnvoyError) as failed:
            await envoy.start()
    assert envoy_cause(str(failed.value)) == f"cannot bind '{taken}': Address already in use"
    assert envoy_cause("[2026-11-26 03:31:02.958][1][info][main] [x.cc:1] all good\n") is None
