"""The real-time delta store: one contract suite run against both backends, then what
only one of them has (Redis outages; LMDB shared by processes), then the factory.

Both stores get a fake clock, so expiry is tested by moving it, not by sleeping.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from pathlib import Path

import pytest

from lookup_server.delta import (
    CatalogChange, DeltaEvent, DeltaLimits, DeltaUnavailable, RecentEvent, Served,
)
from lookup_server.delta.factory import open_delta_store
from lookup_server.delta.lmdb_store import LmdbDeltaStore
from lookup_server.delta.redis_store import RedisDeltaStore

HOUR = 3600.0
T0 = 472_222 * HOUR + 1800.0  # the middle of an hour in November 2023
LIMITS = DeltaLimits(max_events_per_user=5, user_ttl_seconds=1000.0, trending_hours=3,
                     catalog_ttl_seconds=5000.0, impression_ttl_seconds=600.0)


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def _delete_prefix(url: str, prefix: str) -> None:
    import redis
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["lmdb", "redis"])
def store(request, tmp_path, clock):
    """A fresh, empty store of each backend, on the fake clock."""
    if request.param == "lmdb":
        delta = LmdbDeltaStore(tmp_path / "realtime", LIMITS, map_size=64 << 20, clock=clock)
        yield delta
        delta.close()
    else:
        server = request.getfixturevalue("redis_server")
        prefix = f"test:{uuid.uuid4().hex}:"
        delta = RedisDeltaStore(server.url, LIMITS, timeout_ms=500, key_prefix=prefix, clock=clock)
        yield delta
        delta.close()
        _delete_prefix(server.url, prefix)


def ev(user_id, product_id, ts, event_type="view"):
    return DeltaEvent(user_id, product_id, event_type, ts)


# --- recent events --------------------------------------------------------------


def test_recent_events_newest_first_and_since(store):
    store.add_events([ev(1, 10, T0 - 30), ev(1, 11, T0 - 20, "cart"), ev(2, 12, T0 - 25),
                      ev(1, 12, T0 - 10, "purchase")])
    assert store.recent_events(1) == [RecentEvent(12, "purchase", T0 - 10),
                                      RecentEvent(11, "cart", T0 - 20), RecentEvent(10, "view", T0 - 30)]
    assert store.recent_events(2) == [RecentEvent(12, "view", T0 - 25)]
    assert [e.product_id for e in store.recent_events(1, since=T0 - 25)] == [12, 11]
    assert store.recent_events(1, since=T0 - 10) == []  # strictly newer than since
    assert store.recent_events(3) == []


def test_recent_events_ordered_by_time_whatever_the_arrival(store):
    store.add_events([ev(1, 10, T0 - 10)])
    store.add_events([ev(1, 11, T0 - 30), ev(1, 12, T0 - 5)])
    store.add_events([ev(1, 13, T0 - 20)])
    assert [e.product_id for e in store.recent_events(1)] == [12, 10, 13, 11]


def test_recent_events_capped_to_the_newest(store):
    store.add_events([ev(1, p, T0 - 100 + p) for p in range(4)])
    store.add_events([ev(1, p, T0 - 100 + p) for p in range(4, 8)])
    assert [e.product_id for e in store.recent_events(1)] == [7, 6, 5, 4, 3]
    # Older than everything kept: it does not push a newer one out.
    store.add_events([ev(1, 99, T0 - 500)])
    assert [e.product_id for e in store.recent_events(1)] == [7, 6, 5, 4, 3]


def test_a_redelivered_event_is_kept_once(store):
    store.add_events([ev(1, 10, T0 - 10), ev(1, 11, T0 - 5)])
    store.add_events([ev(1, 10, T0 - 10)])
    assert [e.product_id for e in store.recent_events(1)] == [11, 10]


def test_recent_events_expire_with_the_clock(store, clock):
    store.add_events([ev(1, 10, T0 - 900), ev(1, 11, T0)])
    clock.advance(200)  # the first is now 1100 s old, the second 200 s
    assert [e.product_id for e in store.recent_events(1)] == [11]
    clock.advance(801)  # the user's last event is older than user_ttl_seconds
    assert store.recent_events(1) == []
    store.add_events([ev(1, 12, clock.now)])  # expired events do not come back
    assert [e.product_id for e in store.recent_events(1)] == [12]
    store.add_events([ev(5, 13, clock.now - 2000)])  # already expired when it arrives
    assert store.recent_events(5) == []


# --- trending -------------------------------------------------------------------


def test_trending_sums_hourly_buckets_in_the_window(store, clock):
    store.add_events([ev(1, 1, T0), ev(2, 1, T0 - 1), ev(3, 1, T0 - 2)]
                     + [ev(1, 2, T0 - HOUR), ev(2, 2, T0 - HOUR - 1)]
                     + [ev(1, 2, T0 - 2 * HOUR), ev(2, 2, T0 - 2 * HOUR - 1)]
                     + [ev(4, 3, T0 + 10)]
                     + [ev(u, 4, T0 - 4 * HOUR) for u in range(5)])  # before the window
    assert store.trending(3, 10) == [(2, 4.0), (1, 3.0), (3, 1.0)]
    assert store.trending(1, 10) == [(1, 3.0), (3, 1.0)]
    assert store.trending(3, 1) == [(2, 4.0)]
    assert store.trending(100, 10) == store.trending(3, 10)  # no further back than trending_hours
    assert store.trending(0, 10) == [] and store.trending(3, 0) == []


def test_trending_drops_old_buckets(store, clock):
    store.add_events([ev(1, 1, T0), ev(2, 1, T0), ev(1, 2, T0 - 2 * HOUR)])
    clock.advance(HOUR)
    assert store.trending(3, 10) == [(1, 2.0)]  # the bucket two hours back left the window
    store.add_events([ev(1, 3, clock.now)])
    assert store.trending(3, 10) == [(1, 2.0), (3, 1.0)]
    clock.advance(3 * HOUR)
    assert store.trending(3, 10) == []
    # An event from the (slightly) future counts in the current hour.
    store.add_events([ev(1, 5, clock.now + 2 * HOUR)])
    assert store.trending(1, 10) == [(5, 1.0)]


# --- catalog --------------------------------------------------------------------


def test_catalog_latest_change_wins(store, clock):
    store.apply_catalog([CatalogChange(10, True, "shoes", T0 - 100), CatalogChange(11, True, "hats", T0 - 90)])
    store.apply_catalog([CatalogChange(10, False, None, T0 - 50)])  # a deactivation keeps the category
    store.apply_catalog([CatalogChange(10, True, "bags", T0 - 80)])  # late and older: ignored
    assert store.catalog_status([10, 11, 12]) == {
        10: CatalogChange(10, False, "shoes", T0 - 50), 11: CatalogChange(11, True, "hats", T0 - 90)}
    assert store.catalog_status([]) == {}
    clock.advance(5000 - 90 + 1)  # 11's change is now older than catalog_ttl_seconds, 10's is not
    assert store.catalog_status([10, 11]) == {10: CatalogChange(10, False, "shoes", T0 - 50)}
    clock.advance(100)
    assert store.catalog_status([10, 11]) == {}


def test_new_products_by_category_newest_first(store):
    store.apply_catalog([
        CatalogChange(20, True, "shoes", T0 - 300), CatalogChange(21, True, "shoes", T0 - 200),
        CatalogChange(22, True, "hats", T0 - 100), CatalogChange(23, False, "shoes", T0 - 50),
        CatalogChange(24, True, None, T0 - 40),  # no category: listed nowhere
    ])
    assert store.new_products(["shoes"], 0.0, 10) == [(21, "shoes"), (20, "shoes")]
    assert store.new_products(["shoes", "hats"], 0.0, 10) == [(22, "hats"), (21, "shoes"), (20, "shoes")]
    assert store.new_products(["shoes", "hats"], T0 - 200, 10) == [(22, "hats")]  # strictly after since
    assert store.new_products(["hats", "shoes"], 0.0, 2) == [(22, "hats"), (21, "shoes")]
    assert store.new_products(["socks"], 0.0, 10) == []
    assert store.new_products([], 0.0, 10) == [] and store.new_products(["shoes"], 0.0, 0) == []


def test_new_products_follow_later_changes(store, clock):
    store.apply_catalog([CatalogChange(20, True, "shoes", T0 - 300), CatalogChange(21, True, "shoes", T0 - 200),
                         CatalogChange(23, False, "shoes", T0 - 50)])
    store.apply_catalog([CatalogChange(21, False, None, T0 - 10)])  # deactivated: no longer shown
    assert store.new_products(["shoes"], 0.0, 10) == [(20, "shoes")]
    store.apply_catalog([CatalogChange(23, True, None, T0 - 5)])  # first active: new now, in "shoes"
    assert store.new_products(["shoes"], 0.0, 10) == [(23, "shoes"), (20, "shoes")]
    store.apply_catalog([CatalogChange(20, True, "hats", T0 - 1)])  # moved: new in "hats" only
    assert store.new_products(["shoes", "hats"], 0.0, 10) == [(20, "hats"), (23, "shoes")]
    store.apply_catalog([CatalogChange(21, True, None, T0)])  # reactivated: back, at its first time
    assert store.new_products(["shoes"], 0.0, 10) == [(23, "shoes"), (21, "shoes")]
    clock.advance(5001)
    assert store.new_products(["shoes", "hats"], 0.0, 10) == []


# --- the catalog, as a lookup worker caches it -------------------------------------


def test_catalog_version_moves_with_every_change_and_only_then(store):
    first = store.catalog_version()
    assert store.recent_events_and_catalog_version(1) == ([], first)
    store.apply_catalog([CatalogChange(10, True, "shoes", T0 - 100)])
    second = store.catalog_version()
    assert second != first
    store.apply_catalog([])
    store.apply_catalog([CatalogChange(10, False, None, T0 - 200)])  # late and older: nothing changes
    assert store.catalog_version() == second
    store.add_events([ev(1, 10, T0 - 1)])
    events, version = store.recent_events_and_catalog_version(1, T0 - 10)
    assert events == [RecentEvent(10, "view", T0 - 1)] and version == second
    store.apply_catalog([CatalogChange(10, False, None, T0 - 50)])
    assert store.catalog_version() not in (first, second)


def _same_as_the_store(store, view, now, ids=(10, 11, 20, 21, 22, 23, 24, 99),
                       categories=(["shoes"], ["hats"], ["shoes", "hats"], ["socks"])):
    assert view.status(list(ids), now) == store.catalog_status(list(ids))
    for chosen in categories:
        for since, limit in ((0.0, 10), (0.0, 1), (T0 - 200, 10)):
            assert view.new_products(chosen, since, limit, now) == store.new_products(chosen, since, limit), \
                (chosen, since, limit)


def test_catalog_view_answers_as_the_store_does(store, clock):
    """Replays the catalog tests above: after each write the view (reloaded, as a
    worker does when the version moves) answers what the store's own reads answer;
    expiry needs no reload."""
    steps = [
        [CatalogChange(20, True, "shoes", T0 - 300), CatalogChange(21, True, "shoes", T0 - 200),
         CatalogChange(22, True, "hats", T0 - 100), CatalogChange(23, False, "shoes", T0 - 50),
         CatalogChange(24, True, None, T0 - 40), CatalogChange(10, True, "shoes", T0 - 100)],
        [CatalogChange(21, False, None, T0 - 10), CatalogChange(10, False, None, T0 - 50)],
        [CatalogChange(23, True, None, T0 - 5)],
        [CatalogChange(20, True, "hats", T0 - 1)],
        [CatalogChange(21, True, None, T0)],
    ]
    for changes in steps:
        store.apply_catalog(changes)
        view = store.catalog_view(100)
        assert view.complete and view.version == store.catalog_version()
        _same_as_the_store(store, view, clock())
    assert store.new_products(["shoes", "hats"], 0.0, 10)  # the comparisons were not all empty
    for seconds in (4700, 200, 200):  # changes expire one after the other, then all
        clock.advance(seconds)
        _same_as_the_store(store, view, clock())
    assert view.status([10, 20, 21, 22, 23], clock()) == {}


def test_catalog_view_of_too_many_products_is_not_loaded(store):
    store.apply_catalog([CatalogChange(p, True, "shoes", T0 - p) for p in (1, 2, 3)])
    assert store.catalog_view(3).complete and len(store.catalog_view(3)) == 3
    view = store.catalog_view(2)
    assert not view.complete and len(view) == 0 and view.version == store.catalog_version()


def test_an_empty_catalog_has_a_view(store):
    view = store.catalog_view(10)
    assert view.complete and view.version == store.catalog_version()
    assert view.status([1, 2], T0) == {} and view.new_products(["shoes"], 0.0, 5, T0) == []


# --- the bandit -----------------------------------------------------------------


def test_reward_credits_at_most_once(store, clock):
    store.record_served("r1", Served("als", "new", 7))
    store.record_served("r2", Served("als", "new", 8))
    store.record_served("r3", Served("popular", "returning", 9))
    assert store.reward("r1") == Served("als", "new", 7)
    assert store.reward("r1") is None  # already rewarded
    assert store.reward("unknown") is None
    assert store.reward("r3", 0.5) == Served("popular", "returning", 9)
    assert store.bandit_counts() == {("new", "als"): (2.0, 1.0), ("returning", "popular"): (1.0, 0.5)}
    clock.advance(601)  # past impression_ttl_seconds
    assert store.reward("r2") is None
    assert store.bandit_counts()[("new", "als")] == (2.0, 1.0)


def test_a_batch_of_impressions_counts_each_and_each_can_be_rewarded(store):
    """What a worker's impression queue flushes: one write, the same as one call each."""
    store.record_served_many([("r1", Served("als", "new", 7)), ("r2", Served("als", "new", 8)),
                              ("r3", Served("popular", "heavy", 9))])
    store.record_served_many([])
    assert store.bandit_counts() == {("new", "als"): (2.0, 0.0), ("heavy", "popular"): (1.0, 0.0)}
    assert store.reward("r2") == Served("als", "new", 8)
    assert store.reward("r3") == Served("popular", "heavy", 9)
    assert store.bandit_counts() == {("new", "als"): (2.0, 1.0), ("heavy", "popular"): (1.0, 1.0)}


def test_bandit_names_with_separators(store):
    store.record_served("x" * 600, Served("als", "seg|with|bars", 1))  # long ids work too
    assert store.reward("x" * 600) == Served("als", "seg|with|bars", 1)
    assert store.bandit_counts() == {("seg|with|bars", "als"): (1.0, 1.0)}


def test_pin_and_unpin(store):
    assert store.pinned() is None
    store.set_pinned("als")
    assert store.pinned() == "als"
    store.set_pinned("popular")
    assert store.pinned() == "popular"
    store.set_pinned(None)
    assert store.pinned() is None
    store.set_pinned(None)


def test_ping_and_empty_writes(store):
    store.ping()
    store.add_events([])
    store.apply_catalog([])
    assert store.bandit_counts() == {}


# --- Redis only: outages --------------------------------------------------------


def test_redis_down_raises_fast_and_recovers(redis_server, clock):
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisDeltaStore(redis_server.url, LIMITS, timeout_ms=50, key_prefix=prefix, clock=clock)
    try:
        store.set_pinned("als")
        redis_server.stop()
        try:
            for call in (store.ping, store.pinned, lambda: store.reward("r1"),
                         lambda: store.add_events([ev(1, 1, T0)])):
                started = time.monotonic()
                with pytest.raises(DeltaUnavailable, match="redis"):
                    call()
                assert time.monotonic() - started < 2.0  # not the client default (no timeout): fails fast
        finally:
            redis_server.start()
        # The server came back empty; the store reconnects by itself (the first call may still fail).
        for _ in range(3):
            try:
                store.ping()
                break
            except DeltaUnavailable:
                continue
        assert store.pinned() is None
        store.record_served("r1", Served("als", "new", 1))
        assert store.reward("r1") == Served("als", "new", 1)  # the script is loaded again
    finally:
        store.close()
        _delete_prefix(redis_server.url, prefix)


def test_redis_catalog_version_never_comes_back_after_a_restart(redis_server, clock):
    """A Redis restarted empty then given the same number of catalog changes must not
    show a version a worker may have cached from before (a counter would)."""
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisDeltaStore(redis_server.url, LIMITS, timeout_ms=500, key_prefix=prefix, clock=clock)
    try:
        store.apply_catalog([CatalogChange(10, False, "shoes", T0 - 10)])
        before = store.catalog_version()
        redis_server.kill()
        redis_server.start()
        for _ in range(3):  # the first call after the restart may still fail
            try:
                store.ping()
                break
            except DeltaUnavailable:
                continue
        assert store.catalog_version() is None and store.catalog_view(10).status([10], T0) == {}
        store.apply_catalog([CatalogChange(10, False, "shoes", T0 - 10)])
        assert store.catalog_version() not in (None, before)
    finally:
        store.close()
        _delete_prefix(redis_server.url, prefix)


def test_redis_hung_raises_within_the_timeout(redis_server, clock):
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisDeltaStore(redis_server.url, LIMITS, timeout_ms=50, key_prefix=prefix, clock=clock)
    try:
        store.ping()
        redis_server.pause()
        try:
            for call in (store.ping, lambda: store.recent_events(1), lambda: store.trending(3, 10)):
                started = time.monotonic()
                with pytest.raises(DeltaUnavailable, match="Timeout"):
                    call()
                assert time.monotonic() - started < 2.0  # not the client default (no timeout): fails fast
        finally:
            redis_server.resume()
        for _ in range(3):
            try:
                store.ping()
                break
            except DeltaUnavailable:
                continue
        assert store.recent_events(1) == []
    finally:
        store.close()
        _delete_prefix(redis_server.url, prefix)


# --- LMDB only: one environment, several processes ------------------------------


def _child_add_events(path: str, user_id: int, count: int) -> None:
    store = LmdbDeltaStore(Path(path))
    now = time.time()
    store.add_events([DeltaEvent(user_id, p, "view", now - count + p) for p in range(count)])
    store.close()


def _child_reward(path: str, request_ids: list[str], barrier, results) -> None:
    store = LmdbDeltaStore(Path(path))
    barrier.wait()
    results.put(sum(store.reward(request_id) is not None for request_id in request_ids))
    store.close()


def _run(context, target, *args) -> multiprocessing.Process:
    process = context.Process(target=target, args=args)
    process.start()
    return process


def test_lmdb_shared_by_processes(tmp_path):
    path = tmp_path / "realtime"
    store = LmdbDeltaStore(path)
    context = multiprocessing.get_context("spawn")
    try:
        child = _run(context, _child_add_events, str(path), 42, 3)
        child.join(60)
        assert child.exitcode == 0
        assert [e.product_id for e in store.recent_events(42)] == [2, 1, 0]
        assert store.trending(2, 10) == [(0, 1.0), (1, 1.0), (2, 1.0)]
    finally:
        store.close()


def test_lmdb_concurrent_rewards_credit_once(tmp_path):
    path = tmp_path / "realtime"
    store = LmdbDeltaStore(path)
    request_ids = [f"req-{i}" for i in range(300)]
    for request_id in request_ids:
        store.record_served(request_id, Served("als", "all", 1))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    try:
        children = [_run(context, _child_reward, str(path), ids, barrier, results)
                    for ids in (request_ids, request_ids[::-1])]
        credited = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        assert sum(credited) == len(request_ids)
        assert store.bandit_counts() == {("all", "als"): (300.0, 300.0)}
    finally:
        store.close()


def test_lmdb_full_raises_delta_unavailable(tmp_path, clock):
    store = LmdbDeltaStore(tmp_path / "realtime", LIMITS, map_size=256 << 10, clock=clock)
    try:
        with pytest.raises(DeltaUnavailable, match="full"):
            for batch in range(1000):
                store.add_events([ev(batch * 100 + u, u, T0) for u in range(100)])
        store.ping()  # the failed write was rolled back; the store still answers
    finally:
        store.close()


def test_lmdb_expired_records_are_deleted_not_just_hidden(tmp_path, clock):
    store = LmdbDeltaStore(tmp_path / "realtime", LIMITS, clock=clock)
    try:
        store.add_events([ev(u, 1, T0) for u in range(50)])
        store.apply_catalog([CatalogChange(p, True, "shoes", T0) for p in range(50)])
        for i in range(50):
            store.record_served(f"r{i}", Served("als", "all", i))
        clock.advance(4 * HOUR)  # everything above expired, its trending bucket out of the window
        store.add_events([ev(999, 2, clock.now)])
        with store._env.begin() as txn:
            sizes = {name: txn.stat(db)["entries"] for name, db in (
                ("events", store._events), ("catalog", store._catalog), ("new", store._new),
                ("served", store._served), ("trending", store._trending), ("expiry", store._expiry))}
        assert sizes == {"events": 1, "catalog": 0, "new": 0, "served": 0, "trending": 1, "expiry": 1}
    finally:
        store.close()


def test_lmdb_store_refuses_use_from_another_process(tmp_path):
    store = LmdbDeltaStore(tmp_path / "realtime")
    try:
        store._pid = -1  # as if this were a forked child holding its parent's store
        with pytest.raises(DeltaUnavailable, match="after fork"):
            store.recent_events(1)
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_lmdb_store_inherited_by_a_fork_spares_the_parent(tmp_path):
    """In a forked child the inherited store refuses to work, and closing it leaves
    the parent's reader slots (shared memory) alone."""
    store = LmdbDeltaStore(tmp_path / "realtime")
    try:
        store.add_events([ev(1, 10, time.time())])
        with store._env.begin() as held:  # a read the parent has open across the fork
            held.get(b"pinned", db=store._meta)
            readers = store._env.readers()
            pid = os.fork()
            if pid == 0:  # the child: never return into pytest
                code = 1
                try:
                    try:
                        store.recent_events(1)
                    except DeltaUnavailable:
                        code = 0
                    store.close()
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert store._env.readers() == readers
        assert [e.product_id for e in store.recent_events(1)] == [10]
    finally:
        store.close()


def test_lmdb_closed_store_raises_delta_unavailable(tmp_path):
    store = LmdbDeltaStore(tmp_path / "realtime")
    store.close()
    with pytest.raises(DeltaUnavailable):
        store.ping()


# --- the factory ----------------------------------------------------------------


def test_factory_defaults_to_lmdb_under_data_dir(tmp_path):
    store = open_delta_store({}, tmp_path)
    try:
        assert isinstance(store, LmdbDeltaStore)
        assert store.path == tmp_path / "realtime"
        assert store.limits == DeltaLimits()
        assert store.map_size == 1024 << 20
        assert store.fsync is False and store._env.flags()["sync"] is False  # see the store's docstring
    finally:
        store.close()
    absolute = tmp_path / "elsewhere"
    store = open_delta_store({"redis_url": "", "path": str(absolute), "map_size_mb": 8,
                              "max_events_per_user": 7, "user_ttl_seconds": 60, "fsync": True}, tmp_path / "data")
    try:
        assert store.path == absolute and store.map_size == 8 << 20 and store._env.flags()["sync"] is True
        assert store.limits == DeltaLimits(max_events_per_user=7, user_ttl_seconds=60.0)
    finally:
        store.close()


def test_factory_picks_redis_when_a_url_is_set(redis_server, tmp_path):
    store = open_delta_store({"redis_url": redis_server.url, "timeout_ms": 200, "trending_hours": 6,
                              "key_prefix": f"test:{uuid.uuid4().hex}:"}, tmp_path)
    try:
        assert isinstance(store, RedisDeltaStore)
        assert store.limits == DeltaLimits(trending_hours=6)
        store.ping()
    finally:
        store.close()
    assert not (tmp_path / "realtime").exists()


@pytest.mark.parametrize("key, value", [
    ("redis_url", "http://localhost:6379"), ("redis_url", 6379), ("path", ""), ("path", 3),
    ("timeout_ms", 0), ("timeout_ms", "50"), ("timeout_ms", 1.5), ("timeout_ms", True),
    ("map_size_mb", -1), ("key_prefix", None), ("max_events_per_user", 0),
    ("max_events_per_user", 2.5), ("trending_hours", "24"), ("user_ttl_seconds", -1.0),
    ("catalog_ttl_seconds", float("inf")), ("impression_ttl_seconds", float("nan")),
    ("fsync", "yes"), ("fsync", 1),
])
def test_factory_rejects_bad_values(tmp_path, key, value):
    with pytest.raises(ValueError, match=key):
        open_delta_store({key: value}, tmp_path)
    assert not (tmp_path / "realtime").exists()
