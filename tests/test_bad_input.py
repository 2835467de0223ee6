"""What the servers refuse, one test per class of bad input: bodies over the limit
(413, declared or streamed), ``k`` out of bounds or not an integer (400). Batches over
max_batch (413) are tests/test_collector.py's; the fuzz tests
(tests/test_fuzz_openapi.py) look for anything else that slips through."""
from __future__ import annotations

import io
import json

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from lookup_server import app_state
from lookup_server.admin import MAX_BODY_BYTES

from tests.collector_fixtures import AUTH, in_process_collector, landed
from tests.lookup_fixtures import ADMIN_TOKEN

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
COLLECTOR_LIMIT = 4096


def _error(response, code: int) -> str:
    assert response.status_code == code, response.get_data(as_text=True)[:300]
    assert response.is_json
    body = response.get_json()
    assert body["error"]["code"] == code
    return body["error"]["message"]


def _send(app, method: str, path: str, body: bytes, headers: dict, streamed: bool):
    """``body`` with a Content-Length, or streamed as gunicorn passes on a chunked body
    (``wsgi.input_terminated``, no length). Streamed requests go straight to the WSGI
    app: Flask's test client rebuilds the environ and would bound the stream itself."""
    if not streamed:
        return app.test_client().open(path, method=method, data=body, headers=headers,
                                      content_type="application/json")
    environ = EnvironBuilder(path=path, method=method, headers=headers, content_type="application/json",
                             input_stream=io.BytesIO(body)).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    app_iter, status, response_headers = run_wsgi_app(app, environ)
    return app.response_class(b"".join(app_iter), status=status, headers=response_headers)


def _padded_events(size: int) -> bytes:
    """A valid one-event body of exactly ``size`` bytes (JSON allows trailing spaces)."""
    body = json.dumps([{"user_id": 1, "event_type": "view", "product_id": 10}]).encode()
    return body + b" " * (size - len(body))


@pytest.fixture
def collector_app(tmp_path, monkeypatch):
    with in_process_collector(tmp_path, monkeypatch, max_body_bytes=COLLECTOR_LIMIT) as app:
        yield app


# --- bodies over the limit ----------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
@pytest.mark.parametrize("method, path", [("POST", "/v1/events"), ("POST", "/v1/products"),
                                          ("PUT", "/v1/products/7")])
def test_collector_body_over_the_limit_is_413(collector_app, tmp_path, method, path, streamed):
    """One byte over max_body_bytes: 413 JSON and nothing lands, however it was sent
    (a streamed body used to be cut at the limit and read as broken JSON: 400)."""
    response = _send(collector_app, method, path, _padded_events(COLLECTOR_LIMIT + 1), AUTH, streamed)
    _error(response, 413)
    assert landed(tmp_path, "events") == [] and landed(tmp_path, "products") == []


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
def test_collector_body_at_the_limit_is_accepted(collector_app, tmp_path, streamed):
    """Exactly max_body_bytes is still accepted: the limit refuses only what is over it."""
    response = _send(collector_app, "POST", "/v1/events", _padded_events(COLLECTOR_LIMIT), AUTH, streamed)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert len(landed(tmp_path, "events")) == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
def test_admin_body_over_the_limit_is_413(admin_app, streamed):
    """The lookup server's only body ({"algorithm": ...}) is capped too, before it is parsed."""
    body = json.dumps({"algorithm": "popular", "padding": "x" * MAX_BODY_BYTES}).encode()
    _error(_send(admin_app, "PUT", "/v1/admin/pin", body, ADMIN_AUTH, streamed), 413)
    small = json.dumps({"algorithm": "popular"}).encode()
    assert _send(admin_app, "PUT", "/v1/admin/pin", small, ADMIN_AUTH, streamed).get_json() == {"pinned": "popular"}


# --- k ------------------------------------------------------------------------------

BAD_K = ["0", "-1", "201", str(10**30), "9" * 5000, "1.5", "1e3", "0x10", " 5", "5 ", "+5", "5_0",
         "\uff15", "\u0665", "", "k", "null", "[]"]


@pytest.mark.parametrize("k", BAD_K, ids=repr)
@pytest.mark.parametrize("path", ["/v1/users/1/recommendations", "/v1/products/10/similar"])
def test_bad_k_is_400(client, app, path, k):
    """Beyond max_k (200 by default), below 1, or not a plain decimal integer: 400 naming k."""
    assert app_state(app).config.max_k == 200  # "201" above is max_k + 1
    assert _error(client.get(path, query_string={"k": k}), 400).startswith("k must be")


def test_k_at_max_is_served(client, app):
    max_k = app_state(app).config.max_k
    assert client.get("/v1/users/1/recommendations", query_string={"k": max_k}).status_code == 200
