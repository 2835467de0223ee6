"""Reading a request body with the app's ``MAX_CONTENT_LENGTH`` enforced, however it
was sent.

Werkzeug refuses a declared ``Content-Length`` over the limit with 413, but a
streamed (chunked) body, which gunicorn passes on with ``wsgi.input_terminated``
and no length, is only cut at the limit: ``get_data()`` returns the first
``MAX_CONTENT_LENGTH`` bytes as if that were all. Cut JSON then reads as a 400 (or,
cut at a lucky place, as a smaller valid body), so the rest is checked here.
"""
from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


def read_body() -> bytes:
    """The whole body; 413 when it is longer than ``MAX_CONTENT_LENGTH``."""
    data = request.get_data(cache=False)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(data) >= limit:
        # At the limit exactly, or cut there: one more byte from the server's stream tells.
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge(f"the body is over {limit} bytes")
    return data
