"""Schemathesis hooks for the contract run (loaded through SCHEMATHESIS_HOOKS).

Two narrow exceptions, each to a rule the API keeps everywhere else:

* A QUERY request carries content by definition; Envoy refuses one without a
  Content-Type (400 ``query_missing_content_type``) before any route is consulted.
  The fuzzer's bodiless QUERY gets a content type so the route table's own answer
  (405 with Allow) is what the unsupported-method check sees.
* "Schema-valid request rejected" is dropped only for 400s whose reason is not
  about the request's shape: a session in a state that cannot take the command
  (FAILED_PRECONDITION), or an opaque ``page_token`` no listing issued. Any other
  400 on schema-valid data stays a failure.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

_FAILED_PRECONDITION = 9


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() == "QUERY":
        case.headers = {**(case.headers or {}), "Content-Type": "application/json"}


def _refused_for_state_or_token(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    if body.get("code") == _FAILED_PRECONDITION:
        return True
    for detail in body.get("details", []):
        if str(detail.get("@type", "")).endswith("google.rpc.BadRequest"):
            fields = {v.get("field") for v in detail.get("field_violations", [])}
            if fields == {"page_token"}:
                return True
    return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if isinstance(failure, RejectedPositiveData) and response.status_code == 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            return True
        return not _refused_for_state_or_token(body)
    return True
