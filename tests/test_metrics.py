"""GET /metrics: what the lookup server counts, in Prometheus' text format, in one
process (Flask test client) and summed over the workers of a real gunicorn."""
from __future__ import annotations

import importlib.util
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from lookup_server import app_state
from lookup_server.delta import CatalogChange, DeltaUnavailable, Served
from lookup_server.metrics import LATENCY_BUCKETS, UNMATCHED
from lookup_server.snapshot_reader import REJECTION_REASONS
from schemas.settings import PROJECT_ROOT
from tests.lookup_fixtures import (
    build_snapshot, point_current_at, publish_snapshot, running_gunicorn, truncate_data_file,
)

USERS = "/v1/users/<user_id>/recommendations"
SIMILAR = "/v1/products/<product_id>/similar"
SNAPSHOT_CREATED = 1767225600.0  # 2026-01-01T00:00:00Z, the fixtures' manifest time


def scrape(client_or_url) -> dict[str, dict[tuple, float]]:
    """``sample name -> {sorted label items: value}`` of one /metrics answer."""
    if isinstance(client_or_url, str):
        response = requests.get(f"{client_or_url}/metrics", timeout=10)
        assert response.status_code == 200
        text, content_type = response.text, response.headers["Content-Type"]
    else:
        response = client_or_url.get("/metrics")
        assert response.status_code == 200
        text, content_type = response.get_data(as_text=True), response.content_type
    assert content_type.startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by(samples: dict[tuple, float], *names: str) -> dict[tuple, float]:
    """Values keyed by the named labels' values (summing over the others)."""
    summed: dict[tuple, float] = {}
    for labels, value in samples.items():
        key = tuple(dict(labels)[n] for n in names)
        summed[key] = summed.get(key, 0.0) + value
    return summed


def test_answers_and_latency_are_counted(client):
    """Known user, unknown user, similar (own list and fallback), a 400 and a 404:
    the answers by algorithm/fallback and the latency histogram by route and status class."""
    for url in ["/v1/users/1/recommendations", "/v1/users/1/recommendations?k=2",
                "/v1/users/5555/recommendations", "/v1/products/10/similar",
                "/v1/products/777/similar", "/v1/users/x/recommendations", "/no/such/route"]:
        client.get(url)

    metrics = scrape(client)
    assert by(metrics["recsys_lookup_answers_total"], "endpoint", "algorithm", "fallback", "degraded") == {
        (USERS, "popular", "none", "false"): 2,
        (USERS, "popular_fallback", "unknown_user", "false"): 1,
        (SIMILAR, "als", "none", "false"): 1,
        (SIMILAR, "popular_fallback", "unknown_product", "false"): 1,
    }
    assert by(metrics["recsys_lookup_personalised_answers_total"], "endpoint") == {(USERS,): 2, (SIMILAR,): 1}
    counts = by(metrics["recsys_lookup_request_duration_seconds_count"], "endpoint", "status")
    assert counts == {(USERS, "2xx"): 3, (USERS, "4xx"): 1, (SIMILAR, "2xx"): 2, (UNMATCHED, "4xx"): 1}

    buckets = metrics["recsys_lookup_request_duration_seconds_bucket"]
    users_ok = sorted((float(dict(labels)["le"]), value) for labels, value in buckets.items()
                      if dict(labels)["endpoint"] == USERS and dict(labels)["status"] == "2xx")
    assert [le for le, _ in users_ok] == [*LATENCY_BUCKETS, float("inf")]
    assert [v for _, v in users_ok] == sorted(v for _, v in users_ok)  # cumulative
    assert users_ok[-1][1] == 3
    assert metrics["recsys_lookup_explored_items_total"] == {(): 0}
    assert metrics["recsys_lookup_delta_failures_total"] == {(): 0}


def test_exploration_slots_are_counted(app, client):
    """A product new since the snapshot in the user's category fills a slot: counted."""
    store = app_state(app).delta.context().store
    store.apply_catalog([CatalogChange(500, True, "shoes", time.time())])
    body = client.get("/v1/users/1/recommendations?k=10").get_json()
    assert body["realtime"]["explored"] == [500]
    assert scrape(client)["recsys_lookup_explored_items_total"] == {(): 1}


def test_snapshot_version_age_and_rejections(app, client, snapshot_root):
    """snapshot_info names the version in service, its age is now - created_at, and a
    refused version is counted while the old one keeps serving."""
    metrics = scrape(client)
    assert metrics["recsys_lookup_snapshot_info"] == {(("version", "v1"),): 1}
    age = metrics["recsys_lookup_snapshot_age_seconds"][()]
    assert age == pytest.approx(time.time() - SNAPSHOT_CREATED, abs=60)
    rejected = by(metrics["recsys_lookup_snapshots_rejected_total"], "reason")
    assert rejected == {(reason,): 0 for reason in REJECTION_REASONS}  # every reason from 0

    truncate_data_file(build_snapshot(snapshot_root, "v2"))
    point_current_at(snapshot_root, "v2")
    assert not app_state(app).snapshot.refresh()
    metrics = scrape(client)
    rejected = by(metrics["recsys_lookup_snapshots_rejected_total"], "reason")
    assert {reason: n for (reason,), n in rejected.items() if n} == {"size_mismatch": 1}
    assert metrics["recsys_lookup_snapshot_info"] == {(("version", "v1"),): 1}


def test_bandit_gauges_read_the_shared_store(app, client):
    """Impressions, rewards and CTR per (segment, algorithm) are the store's counts at
    scrape time (no request served here, so none recorded by the app itself)."""
    store = app_state(app).delta.context().store
    store.record_served("r1", Served("als", "known", 1))
    store.record_served("r2", Served("als", "known", 2))
    store.record_served("r3", Served("popular", "new", 3))
    assert store.reward("r1") is not None
    assert store.reward("r3", 2.0) is not None

    metrics = scrape(client)
    assert by(metrics["recsys_lookup_bandit_impressions"], "segment", "algorithm") == {
        ("known", "als"): 2, ("new", "popular"): 1}
    assert by(metrics["recsys_lookup_bandit_rewards"], "segment", "algorithm") == {
        ("known", "als"): 1, ("new", "popular"): 2}
    assert by(metrics["recsys_lookup_ctr"], "segment", "algorithm") == {
        ("known", "als"): 0.5, ("new", "popular"): 2.0}
    assert "recsys_lookup_scrape_errors_total" not in metrics


def test_delta_disabled_exports_no_bandit_gauges(make_app, snapshot_root):
    publish_snapshot(snapshot_root, "v1")
    app = make_app(delta={"enabled": False})
    assert app_state(app).snapshot.refresh()
    client = app.test_client()
    assert client.get("/v1/users/1/recommendations").status_code == 200
    metrics = scrape(client)
    assert not any(name.startswith(("recsys_lookup_bandit", "recsys_lookup_ctr")) for name in metrics)
    assert "recsys_lookup_scrape_errors_total" not in metrics
    assert by(metrics["recsys_lookup_answers_total"], "algorithm") == {("popular",): 1}


class _DownStore:
    """Every call fails, as a dead Redis would."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise DeltaUnavailable("down for the test")
        return fail


def test_delta_outage_counts_failures_skips_and_scrape_errors(app, client):
    """With the store down, answers are degraded, the breaker's failed and skipped calls
    become counters, and the bandit read at scrape time is a counted scrape error."""
    context = app_state(app).delta.context()
    context.store = _DownStore()
    for _ in range(5):
        assert client.get("/v1/users/1/recommendations").get_json()["degraded"] is True

    metrics = scrape(client)
    assert by(metrics["recsys_lookup_answers_total"], "degraded") == {("true",): 5}
    breaker = context.breaker
    assert breaker.failed > 0 and breaker.skipped > 0
    assert metrics["recsys_lookup_delta_failures_total"] == {(): breaker.failed}
    assert metrics["recsys_lookup_delta_skipped_total"] == {(): breaker.skipped}
    assert metrics["recsys_lookup_scrape_errors_total"] == {(("source", "bandit"),): 1}
    assert not any(name.startswith("recsys_lookup_bandit") for name in metrics)


def test_openmetrics_when_asked(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


# --- gunicorn: the multiprocess folder --------------------------------------------

def _gunicorn_conf():
    spec = importlib.util.spec_from_file_location("lookup_gunicorn_conf", PROJECT_ROOT / "conf" / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeArbiter:
    class log:
        @staticmethod
        def info(*args):
            pass


def test_gunicorn_hooks_prepare_an_empty_metrics_folder(tmp_path, monkeypatch):
    """on_starting empties a folder the environment names, or makes a private one
    (removed on_exit); the variable is set for the workers to inherit."""
    conf = _gunicorn_conf()
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_99999.db").write_bytes(b"from a former run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    conf.on_starting(_FakeArbiter())
    assert list(given.iterdir()) == []
    conf.on_exit(_FakeArbiter())
    assert given.is_dir()  # not ours to remove

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    conf = _gunicorn_conf()
    conf.on_starting(_FakeArbiter())
    private = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert private.is_dir() and list(private.iterdir()) == []
    conf.on_exit(_FakeArbiter())
    assert not private.exists()


def _answers_in(files: list[Path]) -> float:
    total = 0.0
    for metric in MultiProcessCollector.merge([str(f) for f in files if f.exists()]):
        total += sum(s.value for s in metric.samples if s.name == "recsys_lookup_answers_total")
    return total


def test_counts_aggregate_across_gunicorn_workers(tmp_path):
    """N requests spread over two real workers: each worker's file holds its share, and
    one scrape (answered by either worker) totals N."""
    publish_snapshot(tmp_path / "snapshots", "v1")
    metrics_dir = tmp_path / "prometheus"
    with running_gunicorn(tmp_path, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as server:
        pids = server.wait_all_workers_on("v1")
        url = f"{server.base_url}/v1/users/1/recommendations"
        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(25):  # until both workers have answered some (concurrency spreads them)
                statuses = list(pool.map(lambda _: requests.get(url, timeout=5).status_code, range(16)))
                assert statuses == [200] * 16
                sent += 16
                if all(_answers_in([metrics_dir / f"counter_{pid}.db"]) > 0 for pid in pids):
                    break
        per_worker = {pid: _answers_in([metrics_dir / f"counter_{pid}.db"]) for pid in pids}
        assert all(0 < n < sent for n in per_worker.values()), per_worker

        for _ in range(4):  # whichever worker answers the scrape, it reports the total
            metrics = scrape(server.base_url)
            assert sum(metrics["recsys_lookup_answers_total"].values()) == sent
            assert by(metrics["recsys_lookup_request_duration_seconds_count"],
                      "endpoint", "status")[USERS, "2xx"] == sent
            assert metrics["recsys_lookup_snapshot_info"] == {(("version", "v1"),): 1}
