"""``DeltaStore`` in an embedded LMDB environment: the delta of one host, no server needed.

The environment (``<data_dir>/realtime/`` by default) is shared by the processes of one
host: collector workers write events and catalog changes, lookup workers read them and
write served records and bandit counters. LMDB serialises write transactions across
processes (``lock=True``), so every read-modify-write below is one write transaction and
cannot interleave with another process's.

Named databases (keys big-endian so that LMDB's byte order is numeric order):

- ``events``   user id ``>q`` -> JSON ``[[product_id, event_type, ts], ...]``, newest
  first, at most ``max_events_per_user``; each event is dropped ``user_ttl_seconds``
  after its own time, so a user's record goes ``user_ttl_seconds`` after their last event;
- ``trending`` hour bucket ``>Q`` + product id ``>q`` -> count ``>d``; buckets sort
  oldest first, so dropping the ones out of the window is a short scan from the start;
- ``catalog``  product id ``>q`` -> JSON ``[active, category, changed_at, listed_in]``,
  ``listed_in`` being the category the product is listed as new in (or null);
- ``new``      ``>H`` length + category + appeared_at ``>d`` + product id ``>q`` -> b"",
  so one category's entries are contiguous and in time order;
- ``served``   request id (UTF-8) -> JSON ``[algorithm, segment, user_id, served_at]``;
- ``bandit``   JSON ``[segment, algorithm]`` -> impressions, rewards ``>dd``;
- ``meta``     ``b"pinned"`` -> algorithm name; ``b"catalog_version"`` -> ``>Q``, one more
  in every write transaction that changed ``catalog`` (lookup workers cache the
  catalog changes and reload them when it moves: ``catalog_view``);
- ``expiry``   deadline ``>d`` + tag byte + key of an ``events``/``catalog``/``new``/
  ``served`` record -> b"": the records in deadline order, so every write transaction
  deletes a few expired ones and the store stays bounded even for users, products and
  requests never touched again.

Reads never write: they ignore what is expired, and the next write deletes it.

Commits do not wait for the disk (``fsync=False``, the default): every lookup request
writes its impression, and an fsync per request (~5 ms here) capped a host at a few
hundred requests per second, serialised across workers. A crashed process loses
nothing (its writes are in the page cache); a crashed operating system may lose the
last writes before the kernel flushed them (LMDB keeps its integrity, only durability
is given up). The events themselves are durable in the landing zone, fsynced by the
collector before it answers; the delta only serves them sooner.

A store must be created in the process that uses it, after any fork (a gunicorn
worker opens its own in ``post_fork`` or lazily), and a process that will fork must not
hold one open: LMDB environments do not survive ``fork()``. In a child, the inherited
store raises ``DeltaUnavailable`` and its ``close()`` does nothing (a real close would
free the parent's reader slots, which live in the shared lock file), and py-lmdb refuses
to open the same folder again in that child, as in any process that has it open
already. Every process should pass the same ``map_size``.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import os
import struct
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import lmdb

from lookup_server.delta import (
    CatalogChange, DeltaEvent, DeltaLimits, DeltaUnavailable, RecentEvent, Served, newest_listings,
)
from lookup_server.delta.catalog_view import CatalogView

# At most this many expired records (and old trending entries) are deleted per write
# transaction: enough to keep up with the writes, small enough not to stall one.
SWEEP_BATCH = 200
# LMDB keys are at most 511 bytes; a longer request id is stored under its hash.
MAX_REQUEST_KEY = 256

_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_BUCKET_PRODUCT = struct.Struct(">Qq")
_TIME_PRODUCT = struct.Struct(">dq")
_COUNTS = struct.Struct(">dd")
_PINNED = b"pinned"
_CATALOG_VERSION = b"catalog_version"

# Tag bytes of the expiry index: which database the indexed key belongs to.
_EVENTS, _CATALOG, _NEW, _SERVED = b"e", b"c", b"n", b"s"


def _bucket(ts: float) -> int:
    return int(ts // 3600)


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _category_prefix(category: str) -> bytes:
    raw = category.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def _expiry_key(deadline: float, tag: bytes, key: bytes) -> bytes:
    # Positive doubles sort by their big-endian bytes; a deadline before 1970 is just "expired".
    return _F64.pack(max(deadline, 0.0)) + tag + key


def _request_key(request_id: str) -> bytes:
    raw = request_id.encode("utf-8")
    return raw if len(raw) <= MAX_REQUEST_KEY else b"sha256:" + hashlib.sha256(raw).digest()


def _decode_catalog(product_id: int, raw: bytes) -> CatalogChange:
    active, category, changed_at, _ = json.loads(raw)
    return CatalogChange(product_id, active, category, changed_at)


class _NewListings:
    """The ``new`` database's keys, in its order, read per category when first asked."""

    def __init__(self, keys: list[bytes]):
        self._keys = keys
        self._by_category: dict[str, tuple[tuple[float, int], ...]] = {}

    def get(self, category: str, default=()) -> tuple[tuple[float, int], ...]:
        found = self._by_category.get(category)
        if found is None:
            prefix = _category_prefix(category)
            start = bisect.bisect_left(self._keys, prefix)
            stop = bisect.bisect_left(self._keys, prefix + b"\xff" * (_TIME_PRODUCT.size + 1), start)
            found = self._by_category[category] = tuple(
                _TIME_PRODUCT.unpack_from(key, len(prefix)) for key in reversed(self._keys[start:stop]))
        return found or default


class LmdbDeltaStore:
    """The delta in the LMDB environment at ``path`` (a folder, created if missing)."""

    def __init__(self, path: Path, limits: DeltaLimits = DeltaLimits(), map_size: int = 1 << 30,
                 clock: Callable[[], float] = time.time, fsync: bool = False):
        self.path = Path(path)
        self.limits = limits
        self.map_size = map_size
        self.fsync = fsync
        self._clock = clock
        self._pid = os.getpid()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(str(self.path), map_size=map_size, subdir=True, lock=True,
                                  max_dbs=16, max_readers=1024, sync=fsync, metasync=fsync)
        except (lmdb.Error, OSError) as exc:
            raise DeltaUnavailable(f"delta store {self.path} cannot be opened: {exc}") from exc
        try:
            with self._env.begin(write=True) as txn:
                open_db = lambda name: self._env.open_db(name, txn=txn, create=True)  # noqa: E731
                self._events = open_db(b"events")
                self._trending = open_db(b"trending")
                self._catalog = open_db(b"catalog")
                self._new = open_db(b"new")
                self._served = open_db(b"served")
                self._bandit = open_db(b"bandit")
                self._meta = open_db(b"meta")
                self._expiry = open_db(b"expiry")
        except lmdb.Error as exc:
            self._env.close()
            raise DeltaUnavailable(f"delta store {self.path} cannot be opened: {exc}") from exc
        self._by_tag = {_EVENTS: self._events, _CATALOG: self._catalog, _NEW: self._new,
                        _SERVED: self._served}

    # --- plumbing ---------------------------------------------------------------

    @contextmanager
    def _txn(self, write: bool) -> Iterator[lmdb.Transaction]:
        """A transaction, committed when the block ends normally; LMDB errors -> DeltaUnavailable."""
        if os.getpid() != self._pid:
            raise DeltaUnavailable(f"delta store {self.path} was opened in process {self._pid}, "
                                   f"not in {os.getpid()}: open it after fork")
        try:
            with self._env.begin(write=write) as txn:
                yield txn
        except lmdb.MapFullError as exc:
            raise DeltaUnavailable(f"delta store {self.path} is full (map size {self.map_size} "
                                   "bytes): raise delta.map_size_mb or lower the limits") from exc
        except lmdb.Error as exc:
            raise DeltaUnavailable(f"delta store {self.path}: {type(exc).__name__}: {exc}") from exc

    def _reindex(self, txn, tag: bytes, key: bytes, old: float | None, new: float | None) -> None:
        """Move ``key``'s entry in the expiry index from deadline ``old`` to ``new`` (None: none)."""
        if old is not None:
            txn.delete(_expiry_key(old, tag, key), db=self._expiry)
        if new is not None:
            txn.put(_expiry_key(new, tag, key), b"", db=self._expiry)

    def _sweep(self, txn, now: float) -> None:
        """Delete up to SWEEP_BATCH records whose deadline has passed."""
        cursor = txn.cursor(db=self._expiry)
        cursor.first()
        for _ in range(SWEEP_BATCH):
            key = cursor.key()
            if not key or _F64.unpack_from(key)[0] >= now:
                break
            txn.delete(key[9:], db=self._by_tag[key[8:9]])
            cursor.delete()  # moves to the next entry

    def _add_counts(self, txn, segment: str, algorithm: str, impressions: float, rewards: float) -> None:
        key = _dumps([segment, algorithm])
        raw = txn.get(key, db=self._bandit)
        old = _COUNTS.unpack(raw) if raw else (0.0, 0.0)
        txn.put(key, _COUNTS.pack(old[0] + impressions, old[1] + rewards), db=self._bandit)

    # --- written by the collector -------------------------------------------------

    def add_events(self, events: Sequence[DeltaEvent]) -> None:
        if not events:
            return
        now = self._clock()
        by_user: dict[int, list[DeltaEvent]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        # An event from the future (clock skew) counts in the current hour, one older
        # than the window would be dropped at once: neither creates a bucket.
        now_bucket = _bucket(now)
        oldest_bucket = now_bucket - self.limits.trending_hours + 1
        counts = Counter()
        for event in events:
            bucket = min(_bucket(event.timestamp), now_bucket)
            if bucket >= oldest_bucket:
                counts[_BUCKET_PRODUCT.pack(bucket, event.product_id)] += 1
        with self._txn(write=True) as txn:
            for user_id, new in by_user.items():
                self._merge_user(txn, user_id, new, now)
            for key, count in counts.items():
                raw = txn.get(key, db=self._trending)
                txn.put(key, _F64.pack((_F64.unpack(raw)[0] if raw else 0.0) + count),
                        db=self._trending)
            cursor = txn.cursor(db=self._trending)
            cursor.first()
            for _ in range(SWEEP_BATCH):
                key = cursor.key()
                if not key or _U64.unpack_from(key)[0] >= oldest_bucket:
                    break
                cursor.delete()
            self._sweep(txn, now)

    def _merge_user(self, txn, user_id: int, new: list[DeltaEvent], now: float) -> None:
        """Merge ``new`` into the user's events: expired ones and duplicates out, newest first, capped."""
        ttl = self.limits.user_ttl_seconds
        key = _I64.pack(user_id)
        raw = txn.get(key, db=self._events)
        stored = [tuple(e) for e in json.loads(raw)] if raw else []
        # Newest batch entries first so that, among equal times, the later-added comes first.
        candidates = [(e.product_id, e.event_type, e.timestamp) for e in reversed(new)] + stored
        kept, seen = [], set()
        for event in candidates:
            # The same (product, type, time) twice is a retried delivery: keep one.
            if event[2] >= now - ttl and event not in seen:
                seen.add(event)
                kept.append(event)
        kept.sort(key=lambda e: e[2], reverse=True)
        kept = kept[:self.limits.max_events_per_user]
        if kept:
            txn.put(key, _dumps(kept), db=self._events)
        elif raw:
            txn.delete(key, db=self._events)
        self._reindex(txn, _EVENTS, key, stored[0][2] + ttl if stored else None,
                      kept[0][2] + ttl if kept else None)

    def apply_catalog(self, changes: Sequence[CatalogChange]) -> None:
        if not changes:
            return
        now = self._clock()
        ttl = self.limits.catalog_ttl_seconds
        with self._txn(write=True) as txn:
            changed = False
            for change in changes:
                if change.changed_at < now - ttl:
                    continue  # already expired: it would be swept at once
                key = _I64.pack(change.product_id)
                raw = txn.get(key, db=self._catalog)
                stored = json.loads(raw) if raw else None
                old = stored if stored and stored[2] >= now - ttl else None  # expired = unknown
                if old and change.changed_at < old[2]:
                    continue  # a late, older change: the latest one wins
                changed = True
                category = change.category if change.category is not None else (old[1] if old else None)
                listed = old[3] if old else None
                if change.active and category is not None and listed != category:
                    listed = category
                    new_key = (_category_prefix(category)
                               + _TIME_PRODUCT.pack(change.changed_at, change.product_id))
                    txn.put(new_key, b"", db=self._new)
                    self._reindex(txn, _NEW, new_key, None, change.changed_at + ttl)
                txn.put(key, _dumps([change.active, category, change.changed_at, listed]),
                        db=self._catalog)
                self._reindex(txn, _CATALOG, key, stored[2] + ttl if stored else None,
                              change.changed_at + ttl)
            if changed:  # in the same transaction: a reader sees both or neither
                txn.put(_CATALOG_VERSION, _U64.pack(self._catalog_version(txn) + 1), db=self._meta)
            self._sweep(txn, now)

    # --- read by the lookup server ------------------------------------------------

    def recent_events(self, user_id: int, since: float = 0.0) -> list[RecentEvent]:
        return self.recent_events_and_catalog_version(user_id, since)[0]

    def recent_events_and_catalog_version(self, user_id: int, since: float = 0.0) -> tuple[list[RecentEvent], int]:
        cutoff = self._clock() - self.limits.user_ttl_seconds
        with self._txn(write=False) as txn:
            raw = txn.get(_I64.pack(user_id), db=self._events)
            version = self._catalog_version(txn)
        if raw is None:
            return [], version
        return [RecentEvent(product_id, event_type, ts)
                for product_id, event_type, ts in json.loads(raw)
                if ts > since and ts >= cutoff][:self.limits.max_events_per_user], version

    def catalog_version(self) -> int:
        with self._txn(write=False) as txn:
            return self._catalog_version(txn)

    def _catalog_version(self, txn) -> int:
        raw = txn.get(_CATALOG_VERSION, db=self._meta)
        return _U64.unpack(raw)[0] if raw else 0

    def catalog_view(self, max_products: int) -> CatalogView:
        ttl = self.limits.catalog_ttl_seconds
        with self._txn(write=False) as txn:
            version = self._catalog_version(txn)
            if max(txn.stat(self._catalog)["entries"], txn.stat(self._new)["entries"]) > max_products:
                return CatalogView.too_large(version, ttl)
            # Copied as they are (expired ones too, until a write sweeps them): each is
            # decoded when a request first asks for it.
            records = {int.from_bytes(key, "big", signed=True): value for key, value in txn.cursor(db=self._catalog)}
            listings = _NewListings(list(txn.cursor(db=self._new).iternext(values=False)))
        return CatalogView(version, ttl, records, _decode_catalog, listings)

    def catalog_status(self, product_ids: Sequence[int]) -> dict[int, CatalogChange]:
        cutoff = self._clock() - self.limits.catalog_ttl_seconds
        status = {}
        with self._txn(write=False) as txn:
            for product_id in product_ids:
                raw = txn.get(_I64.pack(product_id), db=self._catalog)
                if raw is not None and (change := _decode_catalog(product_id, raw)).changed_at >= cutoff:
                    status[product_id] = change
        return status

    def new_products(self, categories: Sequence[str], since: float, limit: int) -> list[tuple[int, str]]:
        if limit <= 0:
            return []
        cutoff = self._clock() - self.limits.catalog_ttl_seconds
        found: list[tuple[float, int, str]] = []
        with self._txn(write=False) as txn:
            cursor = txn.cursor(db=self._new)
            for category in dict.fromkeys(categories):
                prefix = _category_prefix(category)
                # Walk the category's entries backwards from its newest one.
                ok = (cursor.prev() if cursor.set_range(prefix + b"\xff" * _TIME_PRODUCT.size)
                      else cursor.last())
                taken = 0
                while ok and taken < limit and cursor.key().startswith(prefix):
                    appeared, product_id = _TIME_PRODUCT.unpack_from(cursor.key(), len(prefix))
                    if appeared <= since or appeared < cutoff:
                        break
                    raw = txn.get(_I64.pack(product_id), db=self._catalog)
                    # Listed once, but shown only while still active in this category.
                    if raw is not None:
                        active, current, changed_at, _ = json.loads(raw)
                        if active and current == category and changed_at >= cutoff:
                            found.append((appeared, product_id, category))
                            taken += 1
                    ok = cursor.prev()
        return newest_listings(found, limit)

    def trending(self, hours: int, limit: int) -> list[tuple[int, float]]:
        hours = min(hours, self.limits.trending_hours)  # older buckets are gone (or going)
        if hours <= 0 or limit <= 0:
            return []
        now_bucket = _bucket(self._clock())
        counts: Counter = Counter()
        with self._txn(write=False) as txn:
            cursor = txn.cursor(db=self._trending)
            if cursor.set_range(_U64.pack(max(now_bucket - hours + 1, 0))):
                for key, value in cursor.iternext():
                    bucket, product_id = _BUCKET_PRODUCT.unpack(key)
                    if bucket > now_bucket:
                        break
                    counts[product_id] += _F64.unpack(value)[0]
        return heapq.nlargest(limit, counts.items(), key=lambda item: (item[1], -item[0]))

    # --- the bandit ---------------------------------------------------------------

    def record_served(self, request_id: str, served: Served) -> None:
        self.record_served_many([(request_id, served)])

    def record_served_many(self, impressions: Sequence[tuple[str, Served]]) -> None:
        if not impressions:
            return
        now = self._clock()
        counts: Counter[tuple[str, str]] = Counter()
        with self._txn(write=True) as txn:
            for request_id, served in impressions:
                key = _request_key(request_id)
                raw = txn.get(key, db=self._served)
                txn.put(key, _dumps([served.algorithm, served.segment, served.user_id, now]), db=self._served)
                self._reindex(txn, _SERVED, key,
                              json.loads(raw)[3] + self.limits.impression_ttl_seconds if raw else None,
                              now + self.limits.impression_ttl_seconds)
                counts[served.segment, served.algorithm] += 1
            for (segment, algorithm), shown in counts.items():
                self._add_counts(txn, segment, algorithm, float(shown), 0.0)
            self._sweep(txn, now)

    def reward(self, request_id: str, amount: float = 1.0) -> Served | None:
        now = self._clock()
        key = _request_key(request_id)
        # Read and delete in one write transaction: of two concurrent rewards (any
        # processes), the second finds nothing, so a request is credited at most once.
        with self._txn(write=True) as txn:
            raw = txn.get(key, db=self._served)
            if raw is None:
                return None
            algorithm, segment, user_id, served_at = json.loads(raw)
            deadline = served_at + self.limits.impression_ttl_seconds
            txn.delete(key, db=self._served)
            self._reindex(txn, _SERVED, key, deadline, None)
            if deadline < now:
                return None
            self._add_counts(txn, segment, algorithm, 0.0, amount)
        return Served(algorithm, segment, user_id)

    def bandit_counts(self) -> dict[tuple[str, str], tuple[float, float]]:
        with self._txn(write=False) as txn:
            rows = list(txn.cursor(db=self._bandit))
        return {tuple(json.loads(key)): _COUNTS.unpack(value) for key, value in rows}

    def set_pinned(self, algorithm: str | None) -> None:
        with self._txn(write=True) as txn:
            if algorithm is None:
                txn.delete(_PINNED, db=self._meta)
            else:
                txn.put(_PINNED, algorithm.encode("utf-8"), db=self._meta)

    def pinned(self) -> str | None:
        with self._txn(write=False) as txn:
            raw = txn.get(_PINNED, db=self._meta)
        return raw.decode("utf-8") if raw is not None else None

    # --- operations ---------------------------------------------------------------

    def ping(self) -> None:
        with self._txn(write=False) as txn:
            txn.stat(self._meta)

    def close(self) -> None:
        """Close the environment; a no-op in a forked child (see the module docstring)."""
        if os.getpid() == self._pid:
            self._env.close()
