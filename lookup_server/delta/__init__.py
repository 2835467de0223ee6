"""The real-time delta: what happened since the last snapshot, shared by every replica.

The collector writes it (events, catalog changes); lookup servers read it at request
time and merge it into the snapshot's lists, and count impressions and rewards in it
for the algorithm bandit. Two backends implement ``DeltaStore``:

- ``RedisDeltaStore`` (``delta.redis_url`` set): production, one Redis for all hosts;
- ``LmdbDeltaStore`` (default): an embedded LMDB file under ``<data_dir>/realtime/``,
  shared by the processes of one host.

What the store keeps, all of it bounded:

- per user, the newest ``max_events_per_user`` events (product, type, time), dropped
  ``user_ttl_seconds`` after the user's last event;
- per product, event counts in hourly buckets (trending), kept ``trending_hours``;
- catalog changes (active flag, category) per product, kept ``catalog_ttl_seconds``,
  and per category the products that appeared since (new products, for exploration);
- per served answer (``request_id``), which algorithm and segment served it, kept
  ``impression_ttl_seconds``, so a later click or purchase can be credited to it;
- per (segment, algorithm), impression and reward counters, and an optional pinned
  algorithm.

Times are Unix seconds (float). Ids are ints. Every method may raise
``DeltaUnavailable`` when the backend cannot answer; callers degrade (see
``lookup_server.delta.breaker``) instead of failing the request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable, Protocol, Sequence

if TYPE_CHECKING:
    from lookup_server.delta.catalog_view import CatalogView


class DeltaUnavailable(Exception):
    """The delta backend did not answer (down, timed out, refused)."""


@dataclass(frozen=True)
class DeltaEvent:
    """One accepted event, as the collector hands it to the store."""
    user_id: int
    product_id: int
    event_type: str
    timestamp: float


@dataclass(frozen=True)
class RecentEvent:
    product_id: int
    event_type: str
    timestamp: float


@dataclass(frozen=True)
class CatalogChange:
    product_id: int
    active: bool
    category: str | None   # None: unchanged / unknown (a deactivation carries no category)
    changed_at: float


def newest_listings(found: Sequence[tuple[float, int, str]], limit: int) -> list[tuple[int, str]]:
    """``new_products``' answer from ``(appeared_at, product_id, category)`` listings:
    newest first, each product once (a product moved between categories is listed in
    both), at most ``limit``."""
    result, seen = [], set()
    for _, product_id, category in sorted(found, key=lambda f: f[0], reverse=True):
        if product_id not in seen and len(result) < limit:
            seen.add(product_id)
            result.append((product_id, category))
    return result


@dataclass(frozen=True)
class Served:
    """What answered one request: the key that rewards are credited to."""
    algorithm: str
    segment: str
    user_id: int


@dataclass(frozen=True)
class DeltaLimits:
    max_events_per_user: int = 50
    user_ttl_seconds: float = 2 * 86_400.0
    trending_hours: int = 24
    catalog_ttl_seconds: float = 2 * 86_400.0
    impression_ttl_seconds: float = 86_400.0


class DeltaStore(Protocol):
    limits: DeltaLimits

    # --- written by the collector -------------------------------------------
    def add_events(self, events: Sequence[DeltaEvent]) -> None:
        """Append to each user's recent events (newest first, capped, TTL refreshed)
        and count each event in its product's hourly trending bucket.

        Each event is kept ``user_ttl_seconds`` after its own timestamp (so a user's
        list is gone that long after their last event); a redelivered event (same
        product, type and timestamp) is kept once but counted again in trending. An
        event older than the trending window counts nowhere, a future one in the
        current hour."""

    def apply_catalog(self, changes: Sequence[CatalogChange]) -> None:
        """Record each product's latest change; a product seen active with a category
        for the first time is listed as new in that category."""

    # --- read by the lookup server, per request ------------------------------
    def recent_events(self, user_id: int, since: float = 0.0) -> list[RecentEvent]:
        """The user's events newer than ``since``, newest first."""

    def recent_events_and_catalog_version(self, user_id: int, since: float = 0.0) -> tuple[list[RecentEvent], Hashable]:
        """``recent_events`` and ``catalog_version`` in one read (one LMDB transaction,
        one Redis round trip): what every user request starts with."""

    def catalog_version(self) -> Hashable:
        """A value that changes with every write that changes the catalog changes, in
        the same atomic write, and never comes back (``catalog_view`` keys on it)."""

    def catalog_view(self, max_products: int) -> "CatalogView":
        """Every unexpired catalog change and the new-product listings, with the version
        they are at, read atomically; ``CatalogView.too_large`` if more than
        ``max_products`` products changed (see ``lookup_server.delta.catalog_view``)."""

    def catalog_status(self, product_ids: Sequence[int]) -> dict[int, CatalogChange]:
        """The latest change of each of ``product_ids`` that has one (others absent)."""

    def new_products(self, categories: Sequence[str], since: float, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` ``(product_id, category)`` of products that appeared in
        ``categories`` after ``since`` and are still active, newest first."""

    def trending(self, hours: int, limit: int) -> list[tuple[int, float]]:
        """``(product_id, count)`` over the last ``hours`` hourly buckets, highest first.

        The buckets are the clock's current hour and the ``hours - 1`` before it;
        ``hours`` is capped at ``limits.trending_hours``."""

    # --- the bandit: lookup servers count impressions, the collector rewards --
    def record_served(self, request_id: str, served: Served) -> None:
        """Remember who answered ``request_id`` and count one impression for it."""

    def record_served_many(self, impressions: Sequence[tuple[str, Served]]) -> None:
        """``record_served`` for each ``(request_id, served)``, in one write."""

    def reward(self, request_id: str, amount: float = 1.0) -> Served | None:
        """Credit ``amount`` to whoever answered ``request_id``, at most once per
        request id; None if the id is unknown, expired or already rewarded."""

    def bandit_counts(self) -> dict[tuple[str, str], tuple[float, float]]:
        """``(segment, algorithm) -> (impressions, rewards)``."""

    def set_pinned(self, algorithm: str | None) -> None:
        """Pin every answer to ``algorithm``; None unpins."""

    def pinned(self) -> str | None: ...

    # --- operations ----------------------------------------------------------
    def ping(self) -> None:
        """Raise DeltaUnavailable unless the backend answers."""

    def close(self) -> None: ...
