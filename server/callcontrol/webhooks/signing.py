"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Each attempt carries ``webhook-id`` (the event id, the same on every retry so
a receiver can deduplicate), ``webhook-timestamp`` (unix seconds of this
attempt, so a receiver can refuse replays) and ``webhook-signature``: one
``v1,<base64 HMAC-SHA256>`` of ``"{id}.{timestamp}.{body}"`` per configured
secret, space-separated. Sending every secret's signature lets an
application rotate: add the new secret, move the receiver over, drop the old.

Written with hmac/hashlib so the gateway does not depend on the reference
package; the tests check it against that package.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A decoded secret; ``repr`` never shows the key."""

    key: bytes

    def __repr__(self) -> str:
        return "SigningKey(<redacted>)"

    @classmethod
    def parse(cls, secret: str) -> SigningKey:
        """Decode ``whsec_<base64>`` (the prefix is optional, like the reference library)."""
        text = secret.removeprefix(SECRET_PREFIX)
        try:
            # Unpadded base64 is common in the wild; extra padding is ignored.
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not whsec_ followed by base64") from exc
        if len(key) < 16:
            raise ValueError("the decoded key is shorter than 16 bytes")
        return cls(key)


def signature(key: SigningKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    return _sign(key, _signed_content(msg_id, timestamp, body))


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return b"%s.%d.%s" % (msg_id.encode(), timestamp, body)


def _sign(key: SigningKey, signed: bytes) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, without building an hmac object per signature.
    digest = hmac.digest(key.key, signed, "sha256")
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(msg_id: str, timestamp: int, body: bytes, keys: Sequence[SigningKey]) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    if not keys:
        raise ValueError("at least one signing key is required")
    signed = _signed_content(msg_id, timestamp, body)  # once, whatever the number of keys
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(_sign(k, signed) for k in keys),
    }
