"""Signatures per Standard Webhooks, checked against the reference package."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from callcontrol.webhooks import SigningKey, webhook_headers
from callcontrol.webhooks.signing import signature

from .conftest import SECRET_A, SECRET_B

BODY = b'{"id":"evt_1","type":"call.answered","data":{}}'


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


def test_one_secret_verifies_with_the_reference_library() -> None:
    headers = webhook_headers("evt_1", _now(), BODY, [SigningKey.parse(SECRET_A)])
    assert Webhook(SECRET_A).verify(BODY, headers)["id"] == "evt_1"


def test_two_secrets_give_two_signatures_each_verifying_alone() -> None:
    headers = webhook_headers("evt_1", _now(), BODY, [SigningKey.parse(SECRET_A), SigningKey.parse(SECRET_B)])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(SECRET_A).verify(BODY, headers)["id"] == "evt_1"
    assert Webhook(SECRET_B).verify(BODY, headers)["id"] == "evt_1"


def test_a_different_secret_or_body_does_not_verify() -> None:
    headers = webhook_headers("evt_1", _now(), BODY, [SigningKey.parse(SECRET_A)])
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_B).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(BODY.replace(b"answered", b"hangup"), headers)


def test_signature_matches_the_reference_sign_for_a_fixed_time() -> None:
    moment = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
    ours = signature(SigningKey.parse(SECRET_A), "evt_1", int(moment.timestamp()), BODY)
    assert ours == Webhook(SECRET_A).sign("evt_1", moment, BODY.decode())


def test_headers_carry_id_and_timestamp_as_sent() -> None:
    headers = webhook_headers("evt_9", 1700000000, BODY, [SigningKey.parse(SECRET_A)])
    assert headers["webhook-id"] == "evt_9"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].startswith("v1,")


def test_secret_prefix_is_optional_and_padding_forgiven() -> None:
    raw = base64.b64decode(SECRET_A.removeprefix("whsec_"))
    assert SigningKey.parse(SECRET_A).key == raw
    assert SigningKey.parse(SECRET_A.removeprefix("whsec_")).key == raw
    unpadded = "whsec_" + base64.b64encode(b"k" * 20).decode().rstrip("=")
    assert SigningKey.parse(unpadded).key == b"k" * 20


@pytest.mark.parametrize(
    "bad", ["whsec_not base64!", "whsec_", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_bad_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"base64|shorter"):
        SigningKey.parse(bad)


def test_key_never_shows_in_repr() -> None:
    assert "redacted" in repr(SigningKey.parse(SECRET_A))
    assert SECRET_A.removeprefix("whsec_") not in repr(SigningKey.parse(SECRET_A))


def test_at_least_one_key_is_required() -> None:
    with pytest.raises(ValueError, match="at least one"):
        webhook_headers("evt_1", 0, BODY, [])
