"""Bearer-token check for the write endpoints (the collector's, the lookup server's admin).

One shared token (conf ``token`` or env ``COLLECTOR_TOKEN``) authorises a producer.
A missing or non-Bearer ``Authorization`` header is 401 with ``WWW-Authenticate:
Bearer`` (the client did not try); a wrong token is 403 (it tried and is refused).
The comparison takes the same time wherever the strings differ (hmac.compare_digest).
"""
from __future__ import annotations

import hmac

from flask import abort, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized


def require_token(expected: str) -> None:
    """Abort the request unless it carries ``Authorization: Bearer <expected>``."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'",
                           www_authenticate=WWWAuthenticate("bearer"))
    if not hmac.compare_digest(presented.strip().encode("utf-8"), expected.encode("utf-8")):
        abort(403, "invalid bearer token")

