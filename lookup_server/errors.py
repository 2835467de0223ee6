"""Every error leaves the server as JSON: ``{"error": {"code": int, "message": str}}``."""
from __future__ import annotations

import logging

from flask import Response, current_app, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def error_body(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def json_error(exc: Exception) -> Response:
    """Flask error handler for ``Exception``: HTTP errors keep their status and
    headers (Allow, Retry-After); anything else is logged and becomes a bare 500."""
    if isinstance(exc, HTTPException):
        response = exc.get_response()
        code, message = exc.code or 500, exc.description or response.status
    else:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = Response(status=500)
        code, message = 500, "internal server error"
    response.set_data(current_app.json.dumps(error_body(code, message), separators=(",", ":")))
    response.content_type = "application/json"
    return response
