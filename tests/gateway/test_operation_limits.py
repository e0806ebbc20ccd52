"""Operation retention and limits are per application: one tenant cannot break another's idempotency."""

from __future__ import annotations

from dataclasses import replace

import pytest

from callcontrol.config import ConfigError, GatewayConfig, from_mapping
from callcontrol.events import CallInitiated, CommandResult, Subscription
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, OTHER_APP_ID, OTHER_AUTH, Stubs, make_config, next_event

RETENTION = 5


@pytest.fixture
def config() -> GatewayConfig:
    base = make_config()
    return replace(base, operations=replace(base.operations, retention_per_app=RETENTION))


async def test_another_apps_burst_does_not_evict_my_operation_and_a_retry_sends_nothing(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    mine = await simulator.place_call()
    await next_event(events, CallInitiated, mine.uuid)
    first = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=mine.uuid, command_uid="answer-1"), metadata=DEMO_AUTH
    )
    await next_event(events, CommandResult, mine.uuid)

    # The other application finishes many more operations than the retention holds.
    theirs = await simulator.place_call(app_id=OTHER_APP_ID)
    await next_event(events, CallInitiated, theirs.uuid)
    for n in range(RETENTION * 4):
        await stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=theirs.uuid, command_uid=f"burst-{n}"), metadata=OTHER_AUTH
        )
        await next_event(events, CommandResult, theirs.uuid)

    again = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=mine.uuid, command_uid="answer-1"), metadata=DEMO_AUTH
    )
    assert again.operation_id == first.operation_id
    answers = [c for c in mine.commands if c.headers.get("execute-app-name") == "answer"]
    assert len(answers) == 1


def test_the_old_global_retention_setting_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"operations\.retention: moved to operations\.retention_per_app"):
        from_mapping({"operations": {"retention": 50000}})
    limits = from_mapping({"operations": {"retention_per_app": 7, "max_watchers_per_app": 3}}).operations
    assert (limits.retention_per_app, limits.max_watchers_per_app) == (7, 3)
