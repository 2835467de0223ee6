"""Property-based fuzzing of every operation the lookup server (with its admin
endpoints) and the collector describe in their ``/openapi.json``, in-process through
Flask's test client.

Schemathesis draws the requests from each document and hypothesis runs them:
requests that fit the description (``positive``) and requests that break it
(``negative``: wrong types, numbers out of range, missing or unknown fields, broken
headers). The write endpoints also get raw bodies no schema produces: bytes that are
not JSON, wrong content types, deep nesting, long unicode. Whatever comes in:

- never a 5xx;
- every 4xx is JSON ``{"error": {"code": <status>, "message": "<reason>"}}``;
- every answer, 2xx or not, validates against the description of its status.

Runs are derandomized, so CI sees the same examples every time, and bounded by the
example counts below (the module takes under a minute on 2 busy cores).
"""
from __future__ import annotations

import json

import pytest
import schemathesis
from flask import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode


from tests.collector_fixtures import AUTH as COLLECTOR_AUTH
from tests.collector_fixtures import in_process_collector
from tests.lookup_fixtures import publish_snapshot
from tests.openapi_checks import check_against_spec

pytestmark = pytest.mark.fuzz

ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Examples per operation: (positive, negative). 0 negative: the operation has no
# parameter, body or token to make invalid. About 120 for each operation with inputs;
# those without have nothing to vary, so hypothesis stops after the one request there is.
LOOKUP_OPERATIONS = {
    ("GET", "/v1/users/{user_id}/recommendations"): (60, 60),
    ("GET", "/v1/products/{product_id}/similar"): (60, 60),
    ("PUT", "/v1/admin/pin"): (40, 60),
    ("GET", "/v1/admin/pin"): (20, 20),  # only the Authorization header varies
    ("DELETE", "/v1/admin/pin"): (20, 20),
    ("GET", "/healthz"): (5, 0),
    ("GET", "/readyz"): (5, 0),
    ("GET", "/openapi.json"): (5, 0),
    ("GET", "/metrics"): (5, 0),
    ("GET", "/status"): (5, 0),
}
COLLECTOR_OPERATIONS = {
    ("POST", "/v1/events"): (60, 60),
    ("POST", "/v1/products"): (60, 60),
    ("PUT", "/v1/products/{product_id}"): (60, 60),
    ("DELETE", "/v1/products/{product_id}"): (30, 30),  # only the id and the header vary
    ("GET", "/healthz"): (5, 0),
    ("GET", "/openapi.json"): (5, 0),
}
RAW_BODY_EXAMPLES = 100


def fuzz_settings(max_examples: int):
    """Reproducible and bounded: fixed examples, no example database, no deadline
    (the machine is shared with benchmarks; nothing here is about speed)."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


# --- the promise, checked on every answer ------------------------------------------

def check_answer(spec: dict, method: str, path: str, response: Response) -> None:
    """No 5xx; a 4xx is a JSON error naming its status and a reason; the answer
    matches the spec's description of its status."""
    status = response.status_code
    body = response.get_data(as_text=True)
    assert status < 500, f"{method} {path} answered {status}: {body[:500]}"
    if status >= 400:
        assert response.mimetype == "application/json", f"{status} as {response.mimetype}: {body[:300]}"
        error = response.get_json()["error"]
        assert error["code"] == status, body[:300]
        assert isinstance(error["message"], str) and error["message"].strip(), body[:300]
    check_against_spec(spec, path, method.lower(), response)


def as_flask_response(answer) -> Response:
    """Schemathesis's response as a Flask one, which the shared checks read."""
    headers = [(name, value) for name, values in answer.headers.items() for value in values]
    return Response(answer.content, status=answer.status_code, headers=headers)


def fuzz_operation(app, method: str, path: str, mode: GenerationMode, max_examples: int,
                   headers: dict[str, str]) -> int:
    """Send ``max_examples`` requests drawn from the operation's description (with
    ``headers``, e.g. a valid token, on top); returns how many were sent."""
    spec = app.test_client().get("/openapi.json").get_json()
    operation = schemathesis.openapi.from_wsgi("/openapi.json", app)[path][method]
    sent = []

    @given(case=operation.as_strategy(mode))
    @fuzz_settings(max_examples)
    def run(case):
        answer = as_flask_response(case.call(headers=headers))
        sent.append(case)
        try:
            check_answer(spec, method, path, answer)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nReproduce with: {case.as_curl_command()}") from None

    run()
    return len(sent)


def described_operations(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def has_inputs(spec: dict, method: str, path: str) -> bool:
    """Whether negative data can break something: parameters, a body or a token."""
    operation = spec["paths"][path][method.lower()]
    return bool(operation.get("parameters") or operation.get("requestBody")
                or operation.get("security", spec.get("security")))


def fuzz_cases(operations: dict) -> list:
    """(method, path, mode, examples) for each operation and mode it is fuzzed in."""
    return [pytest.param(method, path, mode, examples, id=f"{method} {path} {mode.value}")
            for (method, path), counts in operations.items()
            for mode, examples in zip((GenerationMode.POSITIVE, GenerationMode.NEGATIVE), counts)
            if examples]


def check_operation_table(spec: dict, operations: dict) -> None:
    """A new endpoint cannot escape the fuzzing, nor one with inputs the negative run."""
    assert set(operations) == described_operations(spec)
    for (method, path), (_, negative) in operations.items():
        assert (negative > 0) == has_inputs(spec, method, path), f"{method} {path}"


# --- the lookup server --------------------------------------------------------------

@pytest.fixture
def lookup_app(make_app, snapshot_root, monkeypatch):
    """Serving the default test snapshot, admin token set, bandit on (so the switching
    code sees the fuzzed requests too)."""
    monkeypatch.setenv("LOOKUP_ADMIN_TOKEN", ADMIN_TOKEN)
    publish_snapshot(snapshot_root, "v1")
    return make_app(bandit={"enabled": True})


def test_every_lookup_operation_is_fuzzed(lookup_app):
    check_operation_table(lookup_app.test_client().get("/openapi.json").get_json(), LOOKUP_OPERATIONS)


@pytest.mark.parametrize("method, path, mode, examples", fuzz_cases(LOOKUP_OPERATIONS))
def test_fuzz_lookup(lookup_app, method, path, mode, examples):
    assert fuzz_operation(lookup_app, method, path, mode, examples, ADMIN_AUTH) >= 1


# --- the collector ------------------------------------------------------------------

@pytest.fixture
def collector_app(tmp_path, monkeypatch):
    with in_process_collector(tmp_path, monkeypatch) as app:
        yield app


def test_every_collector_operation_is_fuzzed(collector_app):
    check_operation_table(collector_app.test_client().get("/openapi.json").get_json(), COLLECTOR_OPERATIONS)


@pytest.mark.parametrize("method, path, mode, examples", fuzz_cases(COLLECTOR_OPERATIONS))
def test_fuzz_collector(collector_app, method, path, mode, examples):
    assert fuzz_operation(collector_app, method, path, mode, examples, COLLECTOR_AUTH) >= 1


# --- raw bodies: what no schema generates --------------------------------------------

CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", None]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


raw_bodies = st.one_of(
    st.binary(max_size=2048),                                                   # not even text
    st.text(max_size=512).map(lambda s: s.encode("utf-8", "surrogatepass")),    # text, not JSON
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
                 lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner,
                                                                             max_size=5),
                 max_leaves=30).map(lambda value: json.dumps(value).encode()),  # JSON, any shape
    st.integers(min_value=500, max_value=100_000).map(_nested),                 # nested past recursion
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"[1e999999]", b"\xef\xbb\xbf{}", b"{\"a\":1}{}",
                     b'{"events": [', b'"\\ud800"', b"\x00", b"null"]),
)


@pytest.mark.parametrize("method, path", [("POST", "/v1/events"), ("POST", "/v1/products"),
                                          ("PUT", "/v1/products/7")], ids=["events", "products", "product"])
def test_raw_bodies_collector(collector_app, method, path):
    spec = collector_app.test_client().get("/openapi.json").get_json()
    described_path = path.replace("/7", "/{product_id}")

    @given(body=raw_bodies, content_type=st.sampled_from(CONTENT_TYPES))
    @fuzz_settings(RAW_BODY_EXAMPLES)
    def run(body, content_type):
        response = collector_app.test_client().open(path, method=method, data=body,
                                                    content_type=content_type, headers=COLLECTOR_AUTH)
        check_answer(spec, method, described_path, response)

    run()


def test_raw_bodies_admin_pin(lookup_app):
    spec = lookup_app.test_client().get("/openapi.json").get_json()

    @given(body=raw_bodies, content_type=st.sampled_from(CONTENT_TYPES))
    @fuzz_settings(RAW_BODY_EXAMPLES)
    def run(body, content_type):
        response = lookup_app.test_client().put("/v1/admin/pin", data=body, content_type=content_type,
                                                headers=ADMIN_AUTH)
        check_answer(spec, "PUT", "/v1/admin/pin", response)

    run()
