"""Merge the real-time delta into a snapshot answer, per request.

The snapshot is hours old; the delta (``lookup_server.delta``) says what happened
since. For one user request:

1. **Recent events** after the snapshot's data cut-off (its manifest's ``as_of``): what the user bought since is
   removed; the products they viewed, clicked, wished or carted in the last
   ``boost_window_seconds`` are *seeds*.
2. **Seeds' neighbours** (the snapshot's product -> similar lists) are fused with the
   user's snapshot list by reciprocal rank (``rrf_k``; the neighbours weigh
   ``boost_weight``, each seed by its event type), so fresh interest moves the list
   at once. A user with no snapshot row but seeds (a new user) is answered from the
   neighbours alone: algorithm ``recent_neighbours``.
3. **Catalog changes**: a product deactivated since the snapshot is dropped. Each
   worker holds all the delta's catalog changes (``delta.catalog_view``), reloaded
   when the store's catalog version moves; the version comes with the recent events
   (one LMDB transaction, one Redis round trip), so a change reaches the next answer.
4. **Exploration**: ``exploration_share`` of the k slots (at least one when the share
   is positive) go to products that appeared since the snapshot in the categories of
   the user's seeds and list, so new products earn events before the nightly run.
5. **Trending**: an answer from the global popular list (a user the snapshot knows
   nothing of and who has no events yet) is fused, by reciprocal rank, with the
   products most engaged with in the last ``trending_hours`` (the delta's hourly
   counts, read at most every ``trending_cache_seconds`` per worker), so the
   cold-start list follows the day rather than last night.

Every delta read goes through the circuit breaker: if the backend is down or slow
the answer is the snapshot's alone, flagged ``degraded``.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from lookup_server.bandit import Bandit, BanditSettings
from lookup_server.delta import DeltaStore, DeltaUnavailable, RecentEvent, Served
from lookup_server.delta.breaker import CircuitBreaker
from lookup_server.delta.catalog_view import DEFAULT_MAX_PRODUCTS, CatalogCache, CatalogView
from lookup_server.impressions import ImpressionQueue
from lookup_server.recommend import UNKNOWN_USER, Recommendation, recommend_for_user, similar_products
from lookup_server.snapshot_reader import SnapshotReader, UserLookup

log = logging.getLogger(__name__)

RECENT_NEIGHBOURS = "recent_neighbours"  # the algorithm reported for a new user answered from seeds
NEW_USER_RECENT_EVENTS = "new_user_recent_events"  # its fallback step
# Read this many more than k from the snapshot: removals (purchases, deactivations,
# exploration slots) must still leave k.
SLACK = 20


@dataclass(frozen=True)
class MergeSettings:
    boost_window_seconds: float = 3600.0
    boost_weight: float = 1.0
    rrf_k: int = 20
    neighbours_per_seed: int = 20
    max_seeds: int = 5
    exploration_share: float = 0.1
    trending_hours: int = 3
    trending_weight: float = 1.0     # the trending list against the global list (weight 1), by rank
    trending_size: int = 50
    trending_cache_seconds: float = 10.0
    seed_weights: Mapping[str, float] = field(default_factory=lambda: {
        "view": 1.0, "click": 1.0, "wishlist": 2.0, "add_to_cart": 3.0})

    @classmethod
    def from_conf(cls, conf: Mapping) -> "MergeSettings":
        settings = cls(**conf)
        if not 0 <= settings.exploration_share < 1 or settings.rrf_k < 0 or settings.max_seeds < 0:
            raise ValueError("realtime: exploration_share must be in [0, 1), rrf_k and max_seeds >= 0")
        if settings.trending_hours < 1 or settings.trending_size < 0 or settings.trending_weight < 0:
            raise ValueError("realtime: trending_hours must be >= 1, trending_size and trending_weight >= 0")
        return settings


@dataclass(frozen=True)
class MergedAnswer:
    recommendation: Recommendation
    degraded: bool        # the delta could not be read: snapshot only
    recent_events: int    # events since the snapshot that shaped the answer
    removed: int          # products dropped: bought or deactivated since the snapshot
    explored: tuple[int, ...]  # new products given an exploration slot
    trending: int = 0     # products of the answer that came in or rose as trending now


@dataclass
class DeltaContext:
    """What a request needs besides the snapshot: the store, its breaker, the bandit
    (None when disabled), the clock."""
    store: DeltaStore
    breaker: CircuitBreaker
    settings: MergeSettings
    bandit: Bandit | None = None
    clock: Callable[[], float] = time.time
    impressions: ImpressionQueue | None = None  # None: each impression written on the request path
    catalog: CatalogCache | None = None  # None: catalog changes read per product, per request
    _trending_cache: tuple[float, list[tuple[int, float]]] | None = None
    _trending_failed: bool = False
    _trending_refreshing: bool = False
    # (trending copy, snapshot version, its products the catalog has active)
    _trending_active: tuple[list, str, frozenset[int]] | None = None

    def trending(self) -> tuple[list[tuple[int, float]], bool]:
        """``((product_id, count), ...)`` trending now, and whether the last read failed.

        The same for every user, so each worker keeps one copy. Summing the hourly
        buckets takes the store tens or hundreds of milliseconds on a busy day, so
        only the first read waits for it: once the copy is ``trending_cache_seconds``
        old, a background thread reads a new one while requests go on with the old."""
        cached = self._trending_cache
        if cached is None:
            return self._refresh_trending()
        if time.monotonic() - cached[0] >= self.settings.trending_cache_seconds and not self._trending_refreshing:
            self._trending_refreshing = True
            threading.Thread(target=self._refresh_trending, name="trending-refresh", daemon=True).start()
        return cached[1], self._trending_failed

    def trending_in_catalog(self, reader: SnapshotReader) -> tuple[list[tuple[int, float]], frozenset[int], bool]:
        """``trending()`` with the products of it that ``reader``'s catalog has, active.

        Trending counts come from raw events, which may name products nobody catalogued.
        The check reads one record per trending product (~50); it is kept with the copy
        it was made for and the snapshot version, so it runs once per refresh, not per
        request."""
        trending, failed = self.trending()
        memo = self._trending_active
        if memo is None or memo[0] is not trending or memo[1] != reader.version:
            memo = (trending, reader.version, frozenset(reader.active_in_catalog([p for p, _ in trending])))
            self._trending_active = memo
        return trending, memo[2], failed

    def _refresh_trending(self) -> tuple[list[tuple[int, float]], bool]:
        try:
            found, failed = self.breaker.call(
                lambda: self.store.trending(self.settings.trending_hours, self.settings.trending_size), None)
            failed = failed or found is None
            if failed:  # keep the last copy; try again after trending_cache_seconds
                found = self._trending_cache[1] if self._trending_cache is not None else []
            self._trending_failed = failed
            self._trending_cache = (time.monotonic(), found)
            return found, failed
        finally:
            self._trending_refreshing = False

    def catalog_view(self, version, read: bool) -> tuple[CatalogView | None, bool]:
        """``(view, failed)`` for a request that read catalog ``version`` (``read`` False:
        that read failed, so the cached view is dropped and the answer is degraded).
        ``view`` None: read per product from the store."""
        if self.catalog is None:
            return None, not read
        if not read:
            self.catalog.forget()
            return None, True
        return self.catalog.view(version)

    def load_catalog_view(self, max_products: int) -> tuple[CatalogView | None, bool]:
        return self.breaker.call(lambda: self.store.catalog_view(max_products), None)

    def record_served(self, request_id: str, algorithm: str, segment: str, user_id: int) -> bool:
        """Count an impression for ``algorithm`` in ``segment`` so a later click on
        ``request_id`` can reward it; False when the store could not take it."""
        served = Served(algorithm, segment, user_id)
        if self.impressions is not None:
            return self.impressions.add(request_id, served)
        return self.write_impressions([(request_id, served)])

    def write_impressions(self, impressions: Sequence[tuple[str, Served]]) -> bool:
        _, failed = self.breaker.call(lambda: self.store.record_served_many(impressions), None)
        return not failed


# Keys of [delta] that are the breaker's or this module's, not the store factory's.
_NOT_STORE_KEYS = ("enabled", "breaker_failures", "breaker_reset_seconds", "impression_flush_seconds",
                   "catalog_cache_max_products")


class ProcessDelta:
    """The worker's DeltaContext, opened on first use in each process (an LMDB
    environment must not cross a fork; a Redis client should not either)."""

    def __init__(self, delta_conf: Mapping, realtime_conf: Mapping, data_dir: Path,
                 bandit_conf: Mapping | None = None,
                 priors: Callable[[], Mapping[str, Mapping[str, float]]] = dict):
        self.enabled = bool(delta_conf.get("enabled", True))
        self.bandit_settings = BanditSettings.from_conf(dict(bandit_conf or {}))
        self._priors = priors
        self._store_conf = {k: v for k, v in delta_conf.items() if k not in _NOT_STORE_KEYS}
        self._breaker_args = (int(delta_conf.get("breaker_failures", 3)),
                              float(delta_conf.get("breaker_reset_seconds", 2.0)))
        self._impression_flush_seconds = float(delta_conf.get("impression_flush_seconds", 0.0))
        self._catalog_max_products = int(delta_conf.get("catalog_cache_max_products", DEFAULT_MAX_PRODUCTS))
        self.settings = MergeSettings.from_conf(realtime_conf)
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._context: DeltaContext | None = None

    def context(self) -> DeltaContext | None:
        """None when the delta is disabled; a store that cannot open answers degraded
        and is tried again after the breaker's reset time."""
        if not self.enabled:
            return None
        if self._pid != os.getpid() or self._retry_due():
            with self._lock:
                if self._pid != os.getpid() or self._retry_due():
                    replaced = self._context if self._pid == os.getpid() else None
                    self._context = self._open()
                    self._pid = os.getpid()
                    if replaced is not None and replaced.impressions is not None:
                        replaced.impressions.stop()  # its store never opened: nothing to write
        return self._context

    def _retry_due(self) -> bool:
        store = self._context.store if self._context is not None else None
        return isinstance(store, _Unavailable) and time.monotonic() - store.since >= self._breaker_args[1]

    def _open(self) -> DeltaContext:
        from lookup_server.delta.factory import open_delta_store

        try:
            store = open_delta_store(self._store_conf, self._data_dir)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, serve the snapshot
            log.error("delta store cannot open (%s): answering from the snapshot alone", exc)
            store = _Unavailable(str(exc))
        breaker = CircuitBreaker(*self._breaker_args)
        bandit = None
        if self.bandit_settings.enabled:
            bandit = Bandit(self.bandit_settings, self._priors,
                            read_counts=lambda: breaker.call(store.bandit_counts, None)[0],
                            read_pinned=lambda: breaker.call(store.pinned, None)[0])
        context = DeltaContext(store, breaker, self.settings, bandit)
        context.catalog = CatalogCache(context.load_catalog_view, self._catalog_max_products)
        if self._impression_flush_seconds > 0:
            context.impressions = ImpressionQueue(context.write_impressions, self._impression_flush_seconds)
        return context


class _Unavailable:
    """A store that could not be opened: every call fails, so every answer is degraded."""

    def __init__(self, reason: str):
        self.reason = reason
        self.since = time.monotonic()

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise DeltaUnavailable(self.reason)
        return fail


def recommend_with_delta(reader: SnapshotReader, delta: DeltaContext | None, user_id: int, k: int,
                         algorithms: Sequence[str], similar_algorithms: Sequence[str],
                         known: UserLookup | None = None) -> MergedAnswer:
    """The snapshot answer for ``user_id`` with the real-time delta merged in
    (``known``: the reader's ``user_lookup`` of the user, when the caller has it)."""
    base = recommend_for_user(reader, user_id, k + SLACK, algorithms, known)
    if delta is None:
        return MergedAnswer(_cut(base, k), False, 0, 0, ())
    settings, breaker, store = delta.settings, delta.breaker, delta.store
    since = reader.as_of_epoch
    (recent, version), degraded = breaker.call(
        lambda: store.recent_events_and_catalog_version(user_id, since), ([], None))
    catalog, degraded = delta.catalog_view(version, read=not degraded)
    now = delta.clock()
    bought = {e.product_id for e in recent if e.event_type == "purchase"}
    seeds = seed_events(recent, now, settings)

    answer = base
    if seeds:
        neighbours = seed_neighbours(reader, seeds, similar_algorithms, settings)
        if base.fallback is not None:  # no list of the user's own: the fresh events know them better
            answer = Recommendation(*_ranked(neighbours, k + SLACK), algorithm=RECENT_NEIGHBOURS,
                                    fallback=NEW_USER_RECENT_EVENTS) if neighbours else base
        else:
            answer = fuse(base, neighbours, settings, limit=k + SLACK)

    trending_ids: frozenset[int] = frozenset()
    if answer.fallback == UNKNOWN_USER and settings.trending_size and settings.trending_weight and not degraded:
        trending, trending_ids, failed = delta.trending_in_catalog(reader)
        degraded = degraded or failed
        if trending_ids:
            ranked = [p for p, _ in trending if p in trending_ids]
            answer = fuse(answer, {p: 1.0 / (settings.rrf_k + rank + 1) for rank, p in enumerate(ranked)},
                          settings, settings.trending_weight, limit=k + SLACK)

    slots = exploration_slots(k, settings.exploration_share)
    categories = reader.categories([e.product_id for e in seeds] + list(answer.product_ids[:5]))
    fresh: list[tuple[int, str]] = []
    if slots and categories and not degraded:
        if catalog is not None:
            fresh = catalog.new_products(sorted(categories), since, slots * 3, now)
        else:
            fresh, failed = breaker.call(lambda: store.new_products(sorted(categories), since, slots * 3), [])
            degraded = degraded or failed
    candidate_ids = list(dict.fromkeys([*answer.product_ids, *(p for p, _ in fresh)]))
    statuses = {}
    if candidate_ids and not degraded:
        statuses, degraded = _catalog_status(delta, catalog, candidate_ids, now)
    inactive = {p for p, change in statuses.items() if not change.active}
    drop = bought | inactive
    kept = [(p, s) for p, s in zip(answer.product_ids, answer.scores) if p not in drop]
    removed = len(answer.product_ids) - len(kept)
    listed = {p for p, _ in kept}
    explore = [p for p, _ in fresh if p not in drop and p not in listed][:slots]
    merged = kept[:k - len(explore)] + [(p, 0.0) for p in explore]
    ids, scores = (tuple(x) for x in zip(*merged)) if merged else ((), ())
    recommendation = Recommendation(ids, scores, answer.algorithm, answer.fallback)
    return MergedAnswer(recommendation, degraded, len(recent), removed, tuple(explore),
                        sum(1 for p in ids if p in trending_ids))


def similar_with_delta(reader: SnapshotReader, delta: DeltaContext | None, product_id: int, k: int,
                       algorithms: Sequence[str]) -> MergedAnswer:
    """The snapshot's similar products for ``product_id``, minus those deactivated since."""
    answer = similar_products(reader, product_id, k + SLACK, algorithms)
    if delta is None or not answer.product_ids:
        return MergedAnswer(_cut(answer, k), False, 0, 0, ())
    version, degraded = delta.breaker.call(delta.store.catalog_version, None)
    catalog, degraded = delta.catalog_view(version, read=not degraded)
    statuses = {}
    if not degraded:
        statuses, degraded = _catalog_status(delta, catalog, answer.product_ids, delta.clock())
    inactive = {p for p, change in statuses.items() if not change.active}
    kept = [(p, s) for p, s in zip(answer.product_ids, answer.scores) if p not in inactive]
    ids, scores = (tuple(x) for x in zip(*kept[:k])) if kept else ((), ())
    return MergedAnswer(Recommendation(ids, scores, answer.algorithm, answer.fallback), degraded, 0,
                        len(answer.product_ids) - len(kept), ())


def _catalog_status(delta: DeltaContext, catalog: CatalogView | None, product_ids: Sequence[int],
                    now: float) -> tuple[dict, bool]:
    """``(statuses, failed)``: from the worker's view, or read from the store without one."""
    if catalog is not None:
        return catalog.status(product_ids, now), False
    ids = list(product_ids)
    return delta.breaker.call(lambda: delta.store.catalog_status(ids), {})


def seed_events(recent: Sequence[RecentEvent], now: float, settings: MergeSettings) -> list[RecentEvent]:
    """The newest ``max_seeds`` events within the boost window of a seeding type, one per product."""
    seeds, seen = [], set()
    for event in recent:  # newest first
        if now - event.timestamp > settings.boost_window_seconds or len(seeds) >= settings.max_seeds:
            break
        if settings.seed_weights.get(event.event_type, 0) > 0 and event.product_id not in seen:
            seen.add(event.product_id)
            seeds.append(event)
    return seeds


def seed_neighbours(reader: SnapshotReader, seeds: Sequence[RecentEvent], algorithms: Sequence[str],
                    settings: MergeSettings) -> dict[int, float]:
    """``product -> score``: each seed's neighbour list (first of ``algorithms`` it has),
    reciprocal-rank weighted by the seed's event type; the seeds themselves left out."""
    scores: dict[int, float] = {}
    seed_ids = frozenset(e.product_id for e in seeds)
    for event in seeds:
        weight = settings.seed_weights.get(event.event_type, 0.0)
        for algorithm in algorithms:
            found = reader.product_list(algorithm, event.product_id, settings.neighbours_per_seed,
                                        active_only=True, exclude=seed_ids)
            if found is not None:
                for rank, product in enumerate(found[0]):
                    scores[product] = scores.get(product, 0.0) + weight / (settings.rrf_k + rank + 1)
                break
    return scores


def fuse(base: Recommendation, neighbours: Mapping[int, float], settings: MergeSettings,
         weight: float | None = None, limit: int | None = None) -> Recommendation:
    """The snapshot list and reciprocal-rank ``neighbours`` (the seeds' neighbours, or
    the trending products), ``weight`` (default ``boost_weight``) against the list's 1;
    same algorithm label; the best ``limit`` (default all).

    A request passes ``k + SLACK``, as it reads the snapshot list: five seeds bring a
    hundred neighbours, and each product kept past that is one more catalog read."""
    weight = settings.boost_weight if weight is None else weight
    scores = {p: 1.0 / (settings.rrf_k + rank + 1) for rank, p in enumerate(base.product_ids)}
    get = scores.get
    for product, score in neighbours.items():
        scores[product] = get(product, 0.0) + weight * score
    ids, fused = _ranked(scores, limit)
    return Recommendation(ids, fused, base.algorithm, base.fallback)


def exploration_slots(k: int, share: float) -> int:
    """Slots for new products: ``share`` of k, at least one when the share is positive and k > 1."""
    if share <= 0 or k < 2:
        return 0
    return max(1, math.floor(k * share))


def _ranked(scores: Mapping[int, float], limit: int | None = None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Products best first, ties to the smaller id; the first ``limit`` (default all).

    Two sorts with C-level keys (ids ascending, then a stable sort by score, descending)
    cost a third of one sort by a Python ``(-score, id)`` key, and this runs on every
    request with fresh events."""
    ordered = sorted(scores)
    ordered.sort(key=scores.__getitem__, reverse=True)  # reverse keeps equal scores in id order
    ordered = ordered[:limit]
    return tuple(ordered), tuple(map(scores.__getitem__, ordered))


def _cut(recommendation: Recommendation, k: int) -> Recommendation:
    return Recommendation(recommendation.product_ids[:k], recommendation.scores[:k],
                          recommendation.algorithm, recommendation.fallback)
