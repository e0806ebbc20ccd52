"""Domain records → protobuf messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from callcontrol.operations import Operation
from callcontrol.sessions import Session
from callcontrol.v1 import commands_pb2, operations_pb2, sessions_pb2


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def envelope(op: Operation) -> commands_pb2.OperationEnvelope:
    # The envelope always says in_progress: the outcome is the webhook's
    # (and GetOperation's) to tell, even for an idempotent repeat.
    return commands_pb2.OperationEnvelope(
        operation_id=op.operation_id, status="in_progress", timeout_ms=op.timeout_ms
    )


def operation(op: Operation) -> operations_pb2.Operation:
    message = operations_pb2.Operation(
        operation_id=op.operation_id,
        command=op.command,
        command_uid=op.command_uid,
        session_id=op.session_id,
        status=op.status.value,
        timeout_ms=op.timeout_ms,
        created_at=timestamp(op.created_at),
        finished_at=timestamp(op.finished_at),
    )
    if op.reason:
        message.error.reason = op.reason
        message.error.message = op.message
    return message


def session(s: Session) -> sessions_pb2.Session:
    return sessions_pb2.Session(
        session_id=s.session_id,
        state=s.state.value,
        caller_number=s.caller_number,
        destination_number=s.destination_number,
        direction=s.direction,
        created_at=timestamp(s.created_at),
        answered_at=timestamp(s.answered_at),
    )
