"""Contract fuzzing: schemathesis against the served /openapi.json, through the real Envoy.

Bounded so it runs in the normal suite: a fixed seed, a few examples per
operation, one worker and a time cap. Every check is on: no 5xx, every status,
content type, header and body as documented, schema-violating requests refused,
conforming ones accepted, unsupported methods 405, credentials enforced.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from callcontrol.config import DEMO_API_KEY, DEMO_APP_ID
from callcontrol.rest import EnvoyProcess
from callcontrol.simulator import FreeSwitchSimulator

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
MAX_EXAMPLES = 10
# The whole run's cap; it finishes well within it on a loaded two-core machine.
MAX_TIME_S = 240


async def test_the_rest_surface_keeps_its_openapi_contract_under_fuzzing(
    envoy: EnvoyProcess, simulator: FreeSwitchSimulator, tmp_path: Path
) -> None:
    # Live sessions, so lists and reads also answer with data.
    for n in range(3):
        await simulator.place_call(caller_number=f"100{n}")
    report = tmp_path / "report.json"
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{envoy.rest_url}/openapi.json",
        "--url",
        envoy.rest_url,
        "--header",
        f"X-App-ID: {DEMO_APP_ID}",
        "--header",
        f"X-API-Key: {DEMO_API_KEY}",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20261126",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), MAX_TIME_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)

    assert process.returncode == 0, text[-20000:]
    assert json.loads(report.read_text()), text[-2000:]
