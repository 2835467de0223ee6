"""The real-time delta merged into snapshot answers: through the Flask test client,
a real snapshot and the real embedded LMDB delta store (the default backend); the
worker's cached catalog changes against both backends (Redis: a real redis-server)."""
from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest

from lookup_server import app_state
from lookup_server.delta import CatalogChange, DeltaEvent, DeltaUnavailable
from lookup_server.delta.breaker import CircuitBreaker
from lookup_server.realtime import NEW_USER_RECENT_EVENTS, RECENT_NEIGHBOURS, MergeSettings, exploration_slots, fuse
from lookup_server.recommend import Recommendation

from tests.lookup_fixtures import publish_snapshot


def _ids(body) -> list[int]:
    return [item["product_id"] for item in body["items"]]


@pytest.fixture
def store(app):
    """The app's own delta store (LMDB opens a file once per process: share the app's)."""
    return app_state(app).delta.context().store


def events(user_id, *pairs, at=None):
    now = time.time() if at is None else at
    return [DeltaEvent(user_id, product_id, event_type, now - i) for i, (product_id, event_type) in enumerate(pairs)]


def test_without_delta_activity_the_snapshot_answers_unchanged(client):
    body = client.get("/v1/users/1/recommendations").get_json()
    assert _ids(body) == [10, 11, 12, 14, 15, 99]
    assert body["degraded"] is False and body["realtime"] == {"recent_events": 0, "removed": 0, "explored": [],
                                                                    "trending": 0}


def test_new_user_with_an_event_gets_its_neighbours_at_once(client, store):
    """No snapshot row, one view since the snapshot: the viewed product's neighbours
    (inactive 13 skipped, the product itself left out)."""
    store.add_events(events(777, (10, "view")))
    body = client.get("/v1/users/777/recommendations").get_json()
    assert body["algorithm"] == RECENT_NEIGHBOURS and body["fallback"] == NEW_USER_RECENT_EVENTS
    assert _ids(body) == [11, 12, 14] and body["realtime"]["recent_events"] == 1


def test_new_user_without_events_gets_the_global_list(client):
    body = client.get("/v1/users/778/recommendations?k=3").get_json()
    assert body["algorithm"] == "popular_fallback" and body["fallback"] == "unknown_user"
    assert _ids(body) == [20, 10, 21]


def test_a_user_with_a_profile_but_no_list_gets_their_segments_popular_list(client):
    """User 5 has a profile in segment country=DE, which has a list (inactive 13 skipped)."""
    body = client.get("/v1/users/5/recommendations?k=3").get_json()
    assert body["algorithm"] == "popular_fallback" and body["fallback"] == "profile_segment"
    assert _ids(body) == [31, 30, 15]


def test_a_segment_without_a_list_falls_back_to_the_global_list(client):
    body = client.get("/v1/users/6/recommendations?k=3").get_json()
    assert body["fallback"] == "unknown_user" and _ids(body) == [20, 10, 21]


def test_fresh_events_outrank_the_profile_segment(client, store):
    store.add_events(events(5, (10, "view")))
    body = client.get("/v1/users/5/recommendations").get_json()
    assert body["algorithm"] == RECENT_NEIGHBOURS and _ids(body) == [11, 12, 14]


def test_the_global_fallback_follows_what_is_trending_now(client, store):
    """Global list 20, 10, 21, 11 (13 inactive); trending now 999 (not catalogued:
    ignored), 21, 40. Fused by rank (rrf_k 20): 21 rises to the top, 40 comes in and
    ties with 10 (1/22 each; the smaller id first)."""
    store.add_events(events(901, *[(999, "view")] * 5, *[(21, "view")] * 3, *[(40, "view")] * 2))
    body = client.get("/v1/users/778/recommendations?k=5").get_json()
    assert body["fallback"] == "unknown_user" and body["degraded"] is False
    assert _ids(body) == [21, 20, 10, 40, 11] and body["realtime"]["trending"] == 2
    # A user with a list of their own is not touched by trending.
    assert _ids(client.get("/v1/users/1/recommendations?k=3").get_json()) == [10, 11, 12]


def test_a_fresh_view_lifts_the_viewed_products_neighbours(client, store):
    """User 1's list is 10, 11, 12, 14, ...; after viewing 10, its neighbours 11, 12, 14
    (by rank fusion with weight 1, rrf_k 20) move above 10 itself."""
    store.add_events(events(1, (10, "view")))
    body = client.get("/v1/users/1/recommendations").get_json()
    assert body["algorithm"] == "popular" and body["fallback"] is None
    assert _ids(body) == [11, 12, 14, 10, 15, 99]


def test_old_events_do_not_count(client, store):
    """Events before the snapshot's data cut-off are in the snapshot already."""
    store.add_events(events(1, (10, "view"), at=time.time() - 400 * 86_400))
    body = client.get("/v1/users/1/recommendations").get_json()
    assert _ids(body) == [10, 11, 12, 14, 15, 99] and body["realtime"]["recent_events"] == 0


def test_a_view_outside_the_boost_window_seeds_nothing(client, store):
    store.add_events(events(1, (10, "view"), at=time.time() - 2 * 3600))
    body = client.get("/v1/users/1/recommendations").get_json()
    assert _ids(body) == [10, 11, 12, 14, 15, 99] and body["realtime"]["recent_events"] == 1


def test_a_purchase_since_the_snapshot_removes_the_product(client, store):
    store.add_events(events(1, (11, "purchase")))
    body = client.get("/v1/users/1/recommendations?k=4").get_json()
    assert _ids(body) == [10, 12, 14, 15] and body["realtime"]["removed"] == 1


def test_a_deactivated_product_disappears_from_every_answer_at_once(client, store):
    store.apply_catalog([CatalogChange(12, False, None, time.time())])
    assert 12 not in _ids(client.get("/v1/users/1/recommendations").get_json())
    similar = client.get("/v1/products/10/similar").get_json()
    assert _ids(similar) == [11, 14] and similar["degraded"] is False


def test_a_new_product_gets_an_exploration_slot_in_its_category(client, store):
    """Product 50 appears in "shoes" after the snapshot: user 1 (shoes, hats) sees it in
    the last of k=5 slots; a user whose list has no shoes does not."""
    store.apply_catalog([CatalogChange(50, True, "shoes", time.time())])
    body = client.get("/v1/users/1/recommendations?k=5").get_json()
    assert _ids(body) == [10, 11, 12, 14, 50] and body["realtime"]["explored"] == [50]
    other = client.get("/v1/users/2/recommendations?k=5").get_json()  # toys
    assert 50 not in _ids(other)


def test_delta_down_degrades_answers_without_failing_them(make_app, snapshot_root):
    """A Redis nobody listens on: every answer is the snapshot's, marked degraded, 200."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app(delta={"redis_url": "redis://127.0.0.1:1/0", "timeout_ms": 20})
    assert app_state(app).snapshot.refresh()
    client = app.test_client()
    for _ in range(5):
        response = client.get("/v1/users/1/recommendations")
        assert response.status_code == 200
        body = response.get_json()
        assert body["degraded"] is True and _ids(body) == [10, 11, 12, 14, 15, 99]
    breaker = app_state(app).delta.context().breaker
    assert breaker.state == "open" and breaker.skipped >= 2  # later requests did not wait for Redis


def test_delta_disabled_serves_the_snapshot_not_degraded(make_app, snapshot_root):
    publish_snapshot(snapshot_root, "v1")
    app = make_app(delta={"enabled": False})
    assert app_state(app).snapshot.refresh()
    body = app.test_client().get("/v1/users/1/recommendations").get_json()
    assert body["degraded"] is False and _ids(body) == [10, 11, 12, 14, 15, 99]


def test_a_store_that_cannot_open_degrades_then_is_retried(make_app, snapshot_root, tmp_path):
    """The LMDB folder is a file at first: answers are degraded; once the path is
    usable, the next try after the breaker's reset time opens it."""
    publish_snapshot(snapshot_root, "v1")
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    app = make_app(delta={"path": str(blocker / "realtime"), "breaker_reset_seconds": 0.05})
    assert app_state(app).snapshot.refresh()
    client = app.test_client()
    assert client.get("/v1/users/1/recommendations").get_json()["degraded"] is True
    blocker.unlink()
    time.sleep(0.1)
    body = client.get("/v1/users/1/recommendations").get_json()
    assert body["degraded"] is False and _ids(body) == [10, 11, 12, 14, 15, 99]


# --- catalog changes cached per worker ----------------------------------------------


@pytest.fixture(params=["lmdb", "redis"])
def backend_app(request, make_app, snapshot_root):
    """An app serving ``v1`` with each delta backend; the breaker retries after 50 ms."""
    publish_snapshot(snapshot_root, "v1")
    delta = {"breaker_reset_seconds": 0.05}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        delta.update(redis_url=server.url, key_prefix=f"merge:{uuid.uuid4().hex}:", timeout_ms=500)
    app = make_app(delta=delta)
    assert app_state(app).snapshot.refresh()
    return app


def _record_calls(store, *names) -> list[str]:
    """Wrap the store's ``names`` (on the instance) to note each call in the list returned."""
    calls = []
    for name in names:
        method = getattr(store, name)
        setattr(store, name, lambda *a, _m=method, _n=name, **kw: calls.append(_n) or _m(*a, **kw))
    return calls


class _DownStore:
    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise DeltaUnavailable("down for the test")
        return fail


def test_a_catalog_change_after_the_worker_cached_the_catalog_is_in_the_next_answer(backend_app):
    """The worker reads its cached catalog (no per-product reads) until a change moves
    the store's version; the next answer then has it: a deactivation, a new product,
    a reactivation, in /recommendations and /similar."""
    client, context = backend_app.test_client(), app_state(backend_app).delta.context()
    store, now = context.store, time.time()
    store.apply_catalog([CatalogChange(15, False, None, now)])
    assert _ids(client.get("/v1/users/1/recommendations").get_json()) == [10, 11, 12, 14, 99]
    reloads = context.catalog.reloads
    per_product = _record_calls(store, "catalog_status", "new_products", "catalog_view")
    for _ in range(3):
        body = client.get("/v1/users/1/recommendations").get_json()
        assert _ids(body) == [10, 11, 12, 14, 99] and body["degraded"] is False
    assert per_product == [] and context.catalog.reloads == reloads

    store.apply_catalog([CatalogChange(12, False, None, now + 1)])
    assert _ids(client.get("/v1/users/1/recommendations").get_json()) == [10, 11, 14, 99]
    assert _ids(client.get("/v1/products/10/similar").get_json()) == [11, 14]
    store.apply_catalog([CatalogChange(50, True, "shoes", now + 2)])
    body = client.get("/v1/users/1/recommendations?k=4").get_json()
    assert _ids(body) == [10, 11, 14, 50] and body["realtime"]["explored"] == [50]
    store.apply_catalog([CatalogChange(12, True, None, now + 3)])
    assert _ids(client.get("/v1/users/1/recommendations?k=4").get_json()) == [10, 11, 12, 50]
    assert per_product == ["catalog_view"] * 3 and context.catalog.reloads == reloads + 3


def test_a_failing_store_degrades_and_drops_the_cached_catalog(backend_app):
    """With the catalog cached, the store fails: answers are the snapshot's, degraded,
    never errors, and the cached copy is gone; once the store answers again the
    catalog is read anew."""
    client, context = backend_app.test_client(), app_state(backend_app).delta.context()
    store = context.store
    store.apply_catalog([CatalogChange(12, False, None, time.time())])
    assert 12 not in _ids(client.get("/v1/users/1/recommendations").get_json())
    assert context.catalog.cached is not None
    context.store = _DownStore()
    try:
        for path in ("/v1/users/1/recommendations", "/v1/products/10/similar"):
            for _ in range(3):
                response = client.get(path)
                assert response.status_code == 200 and response.get_json()["degraded"] is True
        assert _ids(client.get("/v1/users/1/recommendations").get_json()) == [10, 11, 12, 14, 15, 99]
        assert context.catalog.cached is None
    finally:
        context.store = store
    time.sleep(0.1)  # the breaker's reset time
    body = client.get("/v1/users/1/recommendations").get_json()
    assert body["degraded"] is False and _ids(body) == [10, 11, 14, 15, 99]
    assert context.catalog.cached is not None


def test_a_redis_restarted_empty_is_not_answered_from_the_cached_catalog(make_app, snapshot_root,
                                                                        redis_server):
    """Redis killed and restarted (empty) between two requests: the worker's copy, made
    before, says 12 is deactivated; the next full answer has 12 again."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app(delta={"redis_url": redis_server.url, "key_prefix": f"merge:{uuid.uuid4().hex}:",
                          "timeout_ms": 500, "breaker_reset_seconds": 0.05})
    assert app_state(app).snapshot.refresh()
    client, store = app.test_client(), app_state(app).delta.context().store
    store.apply_catalog([CatalogChange(12, False, None, time.time())])
    assert 12 not in _ids(client.get("/v1/users/1/recommendations").get_json())
    try:
        redis_server.kill()
    finally:
        redis_server.start()
    for _ in range(20):  # the first calls after the restart may fail (degraded answers)
        body = client.get("/v1/users/1/recommendations").get_json()
        if not body["degraded"]:
            break
        time.sleep(0.06)
    assert body["degraded"] is False and _ids(body) == [10, 11, 12, 14, 15, 99]


def test_too_many_catalog_changes_are_read_per_product(make_app, snapshot_root):
    """Past ``catalog_cache_max_products`` the worker caches only the version and reads
    the listed products' changes per request, with the same answers."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app(delta={"catalog_cache_max_products": 1})
    assert app_state(app).snapshot.refresh()
    client, context = app.test_client(), app_state(app).delta.context()
    context.store.apply_catalog([CatalogChange(12, False, None, time.time()),
                                 CatalogChange(50, True, "shoes", time.time())])
    per_product = _record_calls(context.store, "catalog_status", "new_products", "catalog_view")
    for _ in range(2):
        body = client.get("/v1/users/1/recommendations?k=4").get_json()
        assert _ids(body) == [10, 11, 14, 50] and body["degraded"] is False
    assert per_product == ["catalog_view", "new_products", "catalog_status", "new_products", "catalog_status"]


def test_exploration_slots():
    assert [exploration_slots(k, 0.1) for k in (1, 2, 10, 25)] == [0, 1, 1, 2]
    assert exploration_slots(10, 0.0) == 0


def test_fusion_ranks_by_score_then_smaller_id_and_keeps_the_best_limit():
    """fuse's ordering is the definition's, sorted by (-score, id), ties included; a limit
    keeps the head of the same order."""
    import random

    rng, settings = random.Random(7), MergeSettings(rrf_k=2)
    for _ in range(200):
        base_ids = tuple(rng.sample(range(60), rng.randint(0, 30)))
        base = Recommendation(base_ids, (0.0,) * len(base_ids), "als", None)
        neighbours = {p: rng.choice((0.25, 0.5, 1 / 3)) for p in rng.sample(range(60), rng.randint(0, 30))}
        expected = {p: 1.0 / (settings.rrf_k + rank + 1) for rank, p in enumerate(base_ids)}
        for p, score in neighbours.items():
            expected[p] = expected.get(p, 0.0) + settings.boost_weight * score
        ordered = sorted(expected.items(), key=lambda item: (-item[1], item[0]))
        fused = fuse(base, neighbours, settings)
        assert list(zip(fused.product_ids, fused.scores)) == ordered
        limit = rng.randint(0, 40)
        head = fuse(base, neighbours, settings, limit=limit)
        assert list(zip(head.product_ids, head.scores)) == ordered[:limit]


def test_breaker_opens_skips_then_half_opens_and_closes():
    from lookup_server.delta import DeltaUnavailable

    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=5, clock=lambda: now[0])
    calls = []

    def failing():
        calls.append(1)
        raise DeltaUnavailable("down")

    assert breaker.call(failing, "d") == ("d", True) and breaker.state == "closed"
    assert breaker.call(failing, "d") == ("d", True) and breaker.state == "open"
    assert breaker.call(failing, "d") == ("d", True) and len(calls) == 2  # skipped, not called
    now[0] = 5.0
    assert breaker.state == "half_open"
    assert breaker.call(lambda: "ok", "d") == ("ok", False) and breaker.state == "closed"
    assert breaker.failed == 2 and breaker.skipped == 1


def test_trending_is_read_once_then_refreshed_in_the_background(app, store):
    """The first read waits for the store; a stale copy is served while a background
    thread reads the new one, which later requests then get."""
    from tests.lookup_fixtures import wait_until

    context = app_state(app).delta.context()
    context.settings = replace(context.settings, trending_cache_seconds=0.0)
    store.add_events(events(901, (21, "view")))
    assert context.trending() == ([(21, 1.0)], False)
    store.add_events(events(902, (40, "view"), (40, "click")))
    assert context.trending()[0] == [(21, 1.0)]  # the stale copy, at once
    wait_until(lambda: context.trending()[0][:1] == [(40, 2.0)], timeout=5, message="the refreshed copy")


def test_trending_products_are_checked_against_the_catalog_once_per_copy(app, store):
    """The catalog check of the trending products runs when the copy or the snapshot
    version changes, not on every request."""
    context = app_state(app).delta.context()
    store.add_events(events(901, (999, "view"), (21, "view")))
    calls = []

    class CountingReader:
        def __init__(self, version):
            self.version = version

        def active_in_catalog(self, product_ids):
            calls.append(list(product_ids))
            return [p for p in product_ids if p != 999]

    first = CountingReader("v1")
    trending, active, failed = context.trending_in_catalog(first)
    assert active == {21} and not failed and len(calls) == 1
    assert context.trending_in_catalog(first)[1] == {21} and len(calls) == 1
    context.trending_in_catalog(CountingReader("v2"))
    assert len(calls) == 2
    context._refresh_trending()  # a new copy of the trending list
    context.trending_in_catalog(CountingReader("v2"))
    assert len(calls) == 3
