"""The delta's catalog changes held in a worker, reloaded only when they change.

Every listed product needs its catalog status (deactivated since the snapshot?) and
every answer with exploration slots the new products of a few categories: read from
the store, that was one LMDB get per listed product (~40 a request) or a Redis round
trip each. The changes themselves are few (the delta keeps ``catalog_ttl_seconds`` of
them) and change rarely against the request rate, so each worker keeps a
``CatalogView`` of all of them, tagged with the store's *catalog version*: a value the
store changes in the same write (LMDB transaction, Redis script) as any catalog
change. A request reads the version with its other delta reads (same LMDB transaction,
same Redis round trip) and reloads the view only when the version moved, so a change
is in the next answer of every worker, as when each request read the store.

Expiry needs no reload: entries carry their times and are checked against the
request's clock. A view of more than ``max_products`` changes is not loaded (the
store answers "too large" instead) and requests read per product again until the
version moves. Any failed delta read drops the cached view (``CatalogCache.forget``),
so nothing cached outlives an outage unchecked.
"""
from __future__ import annotations

from typing import Callable, Hashable, Mapping, Protocol, Sequence

from lookup_server.delta import CatalogChange, newest_listings

# Views of more changed products than this are not cached (``[delta]
# catalog_cache_max_products``): a reload reads every change (LMDB: ~1 ms per
# thousand here), on the request that first sees the version move, in every worker.
DEFAULT_MAX_PRODUCTS = 10_000


class Listings(Protocol):
    def get(self, category: str, default=()) -> Sequence[tuple[float, int]]:
        """``(appeared_at, product_id)`` listed as new in ``category``, newest first."""


class CatalogView:
    """All catalog changes of a store at one ``version``.

    ``records``: product id -> the store's record of its latest change, decoded by
    ``decode(product_id, record)`` only when a request asks for that product (a reload
    then costs a copy of the records, not a parse of each). ``listings``: per category,
    the products listed as new in it, whether or not they are still active there (that
    is checked against their latest change when asked). ``complete`` False: the store
    held more than the caller's maximum, nothing was loaded, and callers read per
    product (the version is still worth keeping: no reload until it moves)."""

    def __init__(self, version: Hashable, ttl_seconds: float, records: Mapping[int, object],
                 decode: Callable[[int, object], CatalogChange], listings: Listings, complete: bool = True):
        self.version = version
        self.ttl_seconds = ttl_seconds
        self.complete = complete
        self._records = records
        self._decode = decode
        self._listings = listings
        self._decoded: dict[int, CatalogChange] = {}

    @classmethod
    def too_large(cls, version: Hashable, ttl_seconds: float) -> "CatalogView":
        return cls(version, ttl_seconds, {}, None, {}, complete=False)

    def __len__(self) -> int:
        return len(self._records)

    def change(self, product_id: int) -> CatalogChange | None:
        """The product's latest change, expired or not; None without one."""
        change = self._decoded.get(product_id)
        if change is None:
            record = self._records.get(product_id)
            if record is None:
                return None
            change = self._decoded[product_id] = self._decode(product_id, record)
        return change

    def status(self, product_ids: Sequence[int], now: float) -> dict[int, CatalogChange]:
        """As ``DeltaStore.catalog_status`` at time ``now``."""
        cutoff = now - self.ttl_seconds
        status = {}
        records, decoded = self._records, self._decoded
        for product_id in product_ids:
            if product_id in records:
                change = decoded.get(product_id) or self.change(product_id)
                if change.changed_at >= cutoff:
                    status[product_id] = change
        return status

    def new_products(self, categories: Sequence[str], since: float, limit: int,
                     now: float) -> list[tuple[int, str]]:
        """As ``DeltaStore.new_products`` at time ``now``."""
        if limit <= 0:
            return []
        cutoff = now - self.ttl_seconds
        found: list[tuple[float, int, str]] = []
        for category in dict.fromkeys(categories):
            taken, seen = 0, set()
            for appeared, product_id in self._listings.get(category, ()):
                if taken >= limit or appeared <= since or appeared < cutoff:
                    break
                change = self.change(product_id)
                # Listed once, but shown only while still active in this category.
                if (product_id not in seen and change is not None and change.active
                        and change.category == category and change.changed_at >= cutoff):
                    seen.add(product_id)
                    found.append((appeared, product_id, category))
                    taken += 1
        return newest_listings(found, limit)


class CatalogCache:
    """One worker's ``CatalogView``, reloaded through ``load`` when the version moves.

    ``load(max_products)`` is the store's ``catalog_view`` behind the circuit breaker:
    ``(view, failed)``. Request threads may race to reload; both get a correct view
    (each is consistent with its own version) and the last one stays."""

    def __init__(self, load: Callable[[int], tuple[CatalogView | None, bool]],
                 max_products: int = DEFAULT_MAX_PRODUCTS):
        self._load = load
        self.max_products = max_products
        self._view: CatalogView | None = None
        self.reloads = 0  # for tests and profiling

    def view(self, version: Hashable) -> tuple[CatalogView | None, bool]:
        """``(view, failed)`` for a request that read ``version``: the cached view while the
        version is the same, else a fresh one. ``view`` is None when the caller must read
        per product (caching off, or the changes are too many) or the load failed."""
        if self.max_products <= 0:
            return None, False
        cached = self._view
        if cached is None or cached.version != version:
            cached, failed = self._load(self.max_products)
            self.reloads += 1
            if failed or cached is None:
                self._view = None
                return None, True
            self._view = cached
        return (cached if cached.complete else None), False

    @property
    def cached(self) -> CatalogView | None:
        return self._view

    def forget(self) -> None:
        """Drop the view: the store failed, so whatever it holds now must be read anew."""
        self._view = None
