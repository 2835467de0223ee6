"""Admin endpoints of the lookup server: pin every answer to one algorithm, or unpin.

The pin lives in the shared delta store, so it reaches every replica within the
bandit's ``refresh_seconds``. Requires ``Authorization: Bearer <token>`` with the
token from ``LOOKUP_ADMIN_TOKEN`` (or ``admin_token`` in conf/server.toml); with no
token configured the endpoints answer 403, so reads never need one.
"""
from __future__ import annotations

import json
import os

from flask import Blueprint, abort

from lookup_server.auth import require_token
from lookup_server.delta import DeltaUnavailable
from lookup_server.request_body import read_body
from lookup_server.state import app_state

ADMIN_TOKEN_ENV = "LOOKUP_ADMIN_TOKEN"
# The server's only request body is {"algorithm": "<name>"}; anything longer is refused
# with 413 before it is read (the app's MAX_CONTENT_LENGTH).
MAX_BODY_BYTES = 4096

blueprint = Blueprint("admin", __name__, url_prefix="/v1/admin")


@blueprint.before_request
def _authorised() -> None:
    token = os.environ.get(ADMIN_TOKEN_ENV) or app_state().config.admin_token
    if not token:
        abort(403, f"admin endpoints are disabled: set {ADMIN_TOKEN_ENV}")
    require_token(token)


@blueprint.get("/pin")
def get_pin():
    return {"pinned": _store_call(lambda store: store.pinned())}


@blueprint.put("/pin")
def put_pin():
    try:
        body = json.loads(read_body())
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        body = None
    algorithm = body.get("algorithm") if isinstance(body, dict) else None
    if not isinstance(algorithm, str) or not algorithm:
        abort(400, 'expected a JSON body {"algorithm": "<name>"}')
    reader = app_state().snapshot.reader
    known = reader.algorithms("user") if reader is not None else ()
    if algorithm not in known:
        abort(400, f"unknown algorithm {algorithm[:40]!r}; the snapshot has {', '.join(known) or 'none'}")
    _store_call(lambda store: store.set_pinned(algorithm))
    return {"pinned": algorithm}


@blueprint.delete("/pin")
def delete_pin():
    _store_call(lambda store: store.set_pinned(None))
    return {"pinned": None}


def _store_call(action):
    delta = app_state().delta.context()
    if delta is None:
        abort(409, "the real-time delta is disabled: there is nothing to pin in")
    try:
        return action(delta.store)
    except DeltaUnavailable as exc:
        abort(503, f"the delta store is unavailable: {exc}")
