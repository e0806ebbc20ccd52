"""API-key authentication of applications.

Keys are stored as SHA-256 digests (a config may hold only the digest) and
compared with ``hmac.compare_digest``; an unknown application id costs the
same comparison, so timing does not reveal which ids exist.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from callcontrol.config import Application, hash_api_key
from callcontrol.errors import Unauthenticated

_NO_KEY = bytes(32)


class Authenticator:
    def __init__(self, applications: Iterable[Application]) -> None:
        self._apps = {app.app_id: app for app in applications}

    def authenticate(self, app_id: str | None, api_key: str | None) -> Application:
        if not app_id or not api_key:
            raise Unauthenticated("x-app-id and x-api-key are required")
        app = self._apps.get(app_id)
        expected = app.api_key_sha256 if app is not None else _NO_KEY
        if not hmac.compare_digest(hash_api_key(api_key), expected) or app is None:
            raise Unauthenticated("unknown application or wrong API key")
        return app
