"""The event collector: auth, validation, durable landing, the real-time delta store
(the real LmdbDeltaStore, its default backend), and one run under real gunicorn."""
from __future__ import annotations

import json
import re
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import requests

from lookup_server.collector import collector_state, create_collector_app
from lookup_server.delta import Served
from tests.collector_fixtures import AUTH, TOKEN, dead_pid, hidden_files, landed, running_collector
from tests.lookup_fixtures import wait_until

# Recent enough for the store's retention (it drops events days after their time).
_T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
T0 = _T0.isoformat()
T0_EPOCH = str(int(_T0.timestamp()))


@pytest.fixture
def make_collector(tmp_path, monkeypatch):
    """Factory of collector apps on ``tmp_path``; their files are published and their
    stores closed at teardown."""
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)  # it would win over data_dir
    monkeypatch.delenv("COLLECTOR_TOKEN", raising=False)  # it would win over token
    apps = []

    def factory(**overrides):
        app = create_collector_app({"data_dir": str(tmp_path), "token": TOKEN, **overrides})
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        collector_state(app).close()


@pytest.fixture
def collector(make_collector):
    return make_collector()


@pytest.fixture
def collector_client(collector):
    return collector.test_client()


def event(user_id=1, product_id=10, event_type="view", timestamp=T0, **extra):
    body = {"user_id": user_id, "event_type": event_type, "product_id": product_id, **extra}
    if timestamp is not None:
        body["timestamp"] = timestamp
    return body


def store_of(app):
    return collector_state(app).delta.store()


def post_events(client, body, headers=AUTH):
    return client.post("/v1/events", json=body, headers=headers)


# --- start-up -----------------------------------------------------------------------

@pytest.mark.parametrize("token", ["", "too-short"])
def test_refuses_to_start_without_a_long_enough_token(tmp_path, monkeypatch, token):
    monkeypatch.delenv("COLLECTOR_TOKEN", raising=False)
    with pytest.raises(ValueError, match="COLLECTOR_TOKEN"):
        create_collector_app({"data_dir": str(tmp_path), "token": token})


def test_the_environment_token_wins(make_collector, monkeypatch):
    env_token = "from-the-environment-123"
    monkeypatch.setenv("COLLECTOR_TOKEN", env_token)
    client = make_collector(token="").test_client()
    assert post_events(client, event(), {"Authorization": f"Bearer {env_token}"}).status_code == 202
    assert post_events(client, event(), AUTH).status_code == 403


@pytest.mark.parametrize("overrides, key", [
    ({"max_batch": 0}, "max_batch"),
    ({"max_body_bytes": "1MB"}, "max_body_bytes"),
    ({"rotate_seconds": 0}, "rotate_seconds"),
    ({"rewards": {"teleport": 1}}, "teleport"),
    ({"rewards": {"click": -1}}, "click"),
    ({"delta": {"breaker_failures": 0}}, "breaker_failures"),
    ({"token": "has spaces in the token"}, "without spaces"),
])
def test_bad_settings_are_refused_at_start(tmp_path, monkeypatch, overrides, key):
    monkeypatch.delenv("COLLECTOR_TOKEN", raising=False)
    with pytest.raises(ValueError, match=key):
        create_collector_app({"data_dir": str(tmp_path), "token": TOKEN, **overrides})


# --- auth ---------------------------------------------------------------------------

def test_auth_401_403_202(collector_client, tmp_path):
    missing = post_events(collector_client, event(), headers={})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert missing.json["error"]["code"] == 401
    basic = post_events(collector_client, event(), {"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    wrong = post_events(collector_client, event(), {"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert wrong.status_code == 403 and wrong.json == {"error": {"code": 403, "message": "invalid bearer token"}}
    for path, method in [("/v1/products/5", "put"), ("/v1/products/5", "delete"), ("/v1/products", "post")]:
        assert getattr(collector_client, method)(path, json={}).status_code == 401
    assert landed(tmp_path, "events") == [] and landed(tmp_path, "products") == []

    ok = post_events(collector_client, event())
    assert ok.status_code == 202 and ok.json == {"accepted": 1, "realtime": True}
    assert collector_client.get("/healthz").json == {"status": "ok"}  # no auth needed


# --- events -------------------------------------------------------------------------

def test_valid_batch_lands_exactly_its_rows_and_reaches_the_store(collector, tmp_path):
    client = collector.test_client()
    before = datetime.now(timezone.utc)
    body = {"events": [
        event(1, 10, "view", T0),
        event("1", 11, "click", T0_EPOCH, request_id="req-a_1"),  # id as text, epoch seconds
        event(2, 12, "purchase", None),                                 # stamped by the collector
    ]}
    response = post_events(client, body)
    assert response.status_code == 202 and response.json == {"accepted": 3, "realtime": True}

    rows = landed(tmp_path, "events")
    assert rows[:2] == [
        {"user_id": 1, "event_type": "view", "product_id": 10, "timestamp": T0},
        {"user_id": 1, "event_type": "click", "product_id": 11, "timestamp": T0},
    ]
    assert set(rows[2]) == {"user_id", "event_type", "product_id", "timestamp"}  # no request_id
    stamped = datetime.fromisoformat(rows[2]["timestamp"])
    assert stamped.utcoffset().total_seconds() == 0 and before <= stamped <= datetime.now(timezone.utc)

    store = store_of(collector)
    recent = store.recent_events(1)
    assert sorted((e.product_id, e.event_type, e.timestamp) for e in recent) == [
        (10, "view", _T0.timestamp()), (11, "click", _T0.timestamp())]
    assert [(e.product_id, e.event_type) for e in store.recent_events(2)] == [(12, "purchase")]

    # published on close: the visible file holds the same rows, nothing stays hidden
    collector_state(collector).close()
    assert hidden_files(tmp_path, "events") == []
    assert landed(tmp_path, "events", include_hidden=False) == rows


@pytest.mark.parametrize("body", [event(), [event()], {"events": [event()]}])
def test_body_shapes(collector_client, body):
    response = post_events(collector_client, body)
    assert response.status_code == 202 and response.json["accepted"] == 1


@pytest.mark.parametrize("data, message", [
    (b"{not json", "not valid JSON"),
    (b"NaN", "not valid JSON"),
    (b"42", "body must be"),
    (b'{"events": {}}', "must be a JSON array"),
    (b'{"events": [], "extra": 1}', "unknown top-level field"),
])
def test_malformed_bodies_are_400(collector_client, data, message):
    response = collector_client.post("/v1/events", data=data, headers=AUTH)
    assert response.status_code == 400 and message in response.json["error"]["message"]


def test_invalid_batch_is_refused_whole(collector, tmp_path):
    client = collector.test_client()
    body = [
        event(1, 10),
        event(1, 11, "teleport"),                 # unknown type
        event(1, 12),
        {"user_id": 1, "product_id": 13},         # no event_type
        event(-1, 14),                            # negative user id
        event(1, 15, request_id="no spaces!"),    # bad request_id
        event(1, 16, timestmap=T0),               # misspelt field
        event(1, 17, timestamp="2999-01-01T00:00:00Z"),
        "not an object",
    ]
    response = post_events(client, body)
    assert response.status_code == 400
    errors = response.json["errors"]
    assert [e["index"] for e in errors] == [1, 3, 4, 5, 6, 7, 8]
    reasons = dict((e["index"], e["reason"]) for e in errors)
    assert "event_type" in reasons[1] and reasons[3] == "event_type: missing"
    assert "user_id" in reasons[4] and "request_id" in reasons[5] and "timestmap" in reasons[6]
    assert "future" in reasons[7]
    assert response.json["error"]["code"] == 400 and "nothing was accepted" in response.json["error"]["message"]

    assert landed(tmp_path, "events") == []
    assert not (tmp_path / "landing" / "events").exists() or hidden_files(tmp_path, "events") == []
    assert store_of(collector).recent_events(1) == []


def test_at_most_50_errors_are_listed(collector_client):
    response = post_events(collector_client, [event(1, 10, "teleport")] * 120)
    assert response.status_code == 400
    assert len(response.json["errors"]) == 50 and "120 of 120" in response.json["error"]["message"]


def test_too_many_events_or_bytes_is_413(make_collector, tmp_path):
    client = make_collector(max_batch=5, max_body_bytes=4096).test_client()
    too_many = post_events(client, [event(1, p) for p in range(6)])
    assert too_many.status_code == 413 and "at most 5" in too_many.json["error"]["message"]
    big = json.dumps([event(1, 1, request_id="r" * 60)] * 40).encode()
    assert len(big) > 4096
    too_big = client.post("/v1/events", data=big, headers={**AUTH, "Content-Type": "application/json"})
    assert too_big.status_code == 413 and too_big.json["error"]["code"] == 413
    assert landed(tmp_path, "events") == []


def test_request_id_reward_is_credited_once(collector):
    client = collector.test_client()
    store = store_of(collector)
    store.record_served("req-1", Served(algorithm="als", segment="heavy", user_id=1))
    store.record_served("req-2", Served(algorithm="popular", segment="new", user_id=2))

    assert post_events(client, event(1, 10, "view", request_id="req-1")).json["realtime"]  # no reward
    assert store.bandit_counts()[("heavy", "als")] == (1.0, 0.0)
    post_events(client, event(1, 10, "click", request_id="req-1"))
    post_events(client, event(1, 10, "purchase", request_id="req-1"))  # already rewarded
    assert store.bandit_counts()[("heavy", "als")] == (1.0, 1.0)

    # a click and a purchase sent together count as the purchase (4)
    post_events(client, [event(2, 20, "click", request_id="req-2"),
                         event(2, 20, "purchase", request_id="req-2")])
    assert store.bandit_counts()[("new", "popular")] == (1.0, 4.0)
    assert post_events(client, event(3, 30, "click", request_id="unknown-id")).status_code == 202


def test_delta_unavailable_still_lands(make_collector, tmp_path):
    app = make_collector(delta={"redis_url": "redis://127.0.0.1:1", "timeout_ms": 50})
    client = app.test_client()
    response = post_events(client, [event(1, 10), event(2, 11)])
    assert response.status_code == 202 and response.json == {"accepted": 2, "realtime": False}
    assert [(r["user_id"], r["product_id"]) for r in landed(tmp_path, "events")] == [(1, 10), (2, 11)]
    put = client.put("/v1/products/5", json={"category": "shoes"}, headers=AUTH)
    assert put.status_code == 200 and put.json == {"product_id": 5, "active": True, "realtime": False}
    assert products_landed(tmp_path) == [{"product_id": 5, "category": "shoes"}]


def test_delta_disabled_lands_only(make_collector, tmp_path):
    app = make_collector(delta={"enabled": False})
    response = post_events(app.test_client(), event(1, 10))
    assert response.status_code == 202 and response.json == {"accepted": 1, "realtime": False}
    assert len(landed(tmp_path, "events")) == 1
    assert not (tmp_path / "realtime").exists()  # the store was never opened


def test_landing_failure_is_503_and_nothing_acknowledged(collector, tmp_path):
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "events").write_text("a file where the folder should be")
    client = collector.test_client()
    response = post_events(client, event(1, 10))
    assert response.status_code == 503 and response.json["error"]["code"] == 503
    assert response.headers.get("Retry-After") == "1"
    assert store_of(collector).recent_events(1) == []  # not handed on either


# --- products -----------------------------------------------------------------------

def products_landed(data_dir) -> list[dict]:
    """The landed product rows without their ``changed_at``, which each must carry (UTC)."""
    rows = landed(data_dir, "products")
    for row in rows:
        assert datetime.fromisoformat(row["changed_at"]).utcoffset().total_seconds() == 0, row
    return [{k: v for k, v in row.items() if k != "changed_at"} for row in rows]


def test_a_senders_change_time_is_kept_else_the_collector_stamps_it(collector, tmp_path):
    client = collector.test_client()
    client.put("/v1/products/8", json={"category": "a", "changed_at": "2026-11-20T10:00:00Z"}, headers=AUTH)
    before = datetime.now(timezone.utc)
    client.put("/v1/products/9", json={"category": "a"}, headers=AUTH)
    rows = {row["product_id"]: datetime.fromisoformat(row["changed_at"]) for row in landed(tmp_path, "products")}
    assert rows[8] == datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    assert before <= rows[9] <= datetime.now(timezone.utc)


def test_put_product_lands_and_updates_the_catalog(collector, tmp_path):
    client = collector.test_client()
    body = {"category": "shoes.running", "price": 59.5, "other_features": {"brand": "x"}}
    response = client.put("/v1/products/42", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json == {"product_id": 42, "active": True, "realtime": True}
    assert products_landed(tmp_path) == [{"product_id": 42, **body}]
    status = store_of(collector).catalog_status([42])[42]
    assert (status.active, status.category) == (True, "shoes.running")

    same_id = client.put("/v1/products/42", json={**body, "product_id": 42, "active": False}, headers=AUTH)
    assert same_id.status_code == 200 and same_id.json["active"] is False


@pytest.mark.parametrize("path, body, fragment", [
    ("/v1/products/42", {"category": "shoes", "product_id": 43}, "the path 42"),
    ("/v1/products/42", {"price": 3.0}, "category: missing"),
    ("/v1/products/42", {"category": "shoes", "price": -1}, "price"),
    ("/v1/products/42", {"category": "shoes", "colour": "red"}, "unknown field"),
    ("/v1/products/42", ["not", "an", "object"], "not a JSON object"),
    ("/v1/products/x", {"category": "shoes"}, "product_id"),
    ("/v1/products/4294967296", {"category": "shoes"}, "product_id"),
])
def test_put_product_refusals(collector, tmp_path, path, body, fragment):
    response = collector.test_client().put(path, json=body, headers=AUTH)
    assert response.status_code == 400 and fragment in response.json["error"]["message"]
    assert landed(tmp_path, "products") == []


def test_delete_lands_a_deactivation(collector, tmp_path):
    client = collector.test_client()
    client.put("/v1/products/7", json={"category": "hats"}, headers=AUTH)
    response = client.delete("/v1/products/7", headers=AUTH)
    assert response.status_code == 200 and response.json == {"product_id": 7, "active": False, "realtime": True}
    assert products_landed(tmp_path)[-1] == {"product_id": 7, "active": False}
    assert store_of(collector).catalog_status([7])[7].active is False


def test_product_batch_is_all_or_nothing(collector, tmp_path):
    client = collector.test_client()
    bad = client.post("/v1/products", json={"products": [
        {"product_id": 1, "category": "a"}, {"category": "b"}, {"product_id": 3, "category": ""}]},
        headers=AUTH)
    assert bad.status_code == 400 and [e["index"] for e in bad.json["errors"]] == [1, 2]
    assert landed(tmp_path, "products") == [] and store_of(collector).catalog_status([1]) == {}

    good = client.post("/v1/products", json={"products": [
        {"product_id": 1, "category": "a"}, {"product_id": 2, "category": "b", "active": False}]},
        headers=AUTH)
    assert good.status_code == 200 and good.json == {"accepted": 2, "realtime": True}
    assert products_landed(tmp_path) == [{"product_id": 1, "category": "a"},
                                         {"product_id": 2, "category": "b", "active": False}]
    status = store_of(collector).catalog_status([1, 2])
    assert (status[1].active, status[2].active) == (True, False)


def test_unknown_route_and_method_are_json(collector_client):
    assert collector_client.get("/v1/nothing").json["error"]["code"] == 404
    assert collector_client.get("/v1/events").json["error"]["code"] == 405


# --- recovery -----------------------------------------------------------------------

def test_start_up_publishes_what_a_crashed_worker_left(make_collector, tmp_path):
    from lookup_server.collector.landing_writer import encode_rows, host_label

    folder = tmp_path / "landing" / "events"
    folder.mkdir(parents=True)
    rows = [event(1, 10), event(1, 11)]
    hidden = folder / f".collector-{host_label()}-{dead_pid()}-1700000000000.jsonl.open"
    hidden.write_bytes(encode_rows(rows) + b'{"user_id": 1, "event_type": "vi')

    make_collector()
    assert hidden_files(tmp_path, "events") == []
    assert landed(tmp_path, "events", include_hidden=False) == rows


# --- real gunicorn ------------------------------------------------------------------

def test_gunicorn_two_workers_every_acknowledged_event_lands(tmp_path):
    """Concurrent batches over two workers, one worker killed (SIGKILL) between two
    waves: after SIGTERM every acknowledged event is in a visible landing file exactly
    once and nothing is left hidden (the master publishes what the killed one left)."""
    waves = [[[event(user, 100 + i, "click", T0) for i in range(5)] for user in range(start, start + 40)]
             for start in (0, 1000)]
    answers = []
    with running_collector(tmp_path, workers=2) as server:
        def send(batch):
            response = requests.post(f"{server.base_url}/v1/events", json={"events": batch},
                                     headers=AUTH, timeout=10)
            return batch, response.status_code, response.json()

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers += pool.map(send, waves[0])
            victim = min(server.worker_pids())
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
                       message="a replacement worker")
            answers += pool.map(send, waves[1])
        assert requests.post(f"{server.base_url}/v1/events", json=event(), timeout=5).status_code == 401
    assert server.process.returncode == 0, server.log_text()
    assert all(status == 202 and body == {"accepted": 5, "realtime": True}
               for _, status, body in answers), answers
    acknowledged = sorted(json.dumps(e, sort_keys=True) for batch, _, _ in answers for e in batch)
    assert len(acknowledged) == 400

    assert hidden_files(tmp_path, "events") == [], server.log_text()
    rows = landed(tmp_path, "events", include_hidden=False)
    assert sorted(json.dumps(r, sort_keys=True) for r in rows) == acknowledged


# --- the OpenAPI description ------------------------------------------------------

def _response_schema(spec: dict, path: str, method: str, status: int) -> dict:
    described = spec["paths"][path][method]["responses"][str(status)]
    if "$ref" in described:
        described = spec["components"]["responses"][described["$ref"].rsplit("/", 1)[1]]
    return {**described["content"]["application/json"]["schema"], "components": spec["components"]}


def test_openapi_describes_every_route_and_real_answers_match(collector):
    from jsonschema import Draft202012Validator

    client = collector.test_client()
    spec = client.get("/openapi.json").get_json()
    routes = {(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
              for rule in collector.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, methods in spec["paths"].items() for method in methods}
    assert routes == described
    Draft202012Validator.check_schema(spec["components"]["schemas"]["Event"])
    answers = [
        ("/v1/events", "post", post_events(client, [event()])),
        ("/v1/events", "post", post_events(client, [event(event_type="teleport")])),
        ("/v1/events", "post", post_events(client, [event()], headers={})),
        ("/v1/events", "post", post_events(client, [event()], headers={"Authorization": "Bearer wrong-token"})),
        ("/v1/products/{product_id}", "put", client.put("/v1/products/5", json={"category": "a.b"}, headers=AUTH)),
        ("/v1/products/{product_id}", "delete", client.delete("/v1/products/5", headers=AUTH)),
        ("/v1/products", "post", client.post("/v1/products", json={"products": [{"product_id": 6, "category": "c"}]},
                                             headers=AUTH)),
    ]
    for path, method, response in answers:
        schema = _response_schema(spec, path, method, response.status_code)
        Draft202012Validator(schema).validate(response.get_json())
    # The documented event schema accepts what the collector accepts.
    event_schema = {**spec["components"]["schemas"]["Event"], "components": spec["components"]}
    Draft202012Validator(event_schema).validate(event(request_id="abc-1"))
