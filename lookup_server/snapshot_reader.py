"""Read-only access to one published snapshot version (layout: ``schemas/snapshot.py``).

A ``SnapshotReader`` is immutable once built and shared by every request thread of
a worker. Its LMDB environment closes when the last reference to the reader goes
away: a read transaction holds a strong reference to its environment, so a request
that grabbed the reader before a swap finishes safely on the old version.
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import lmdb

from lookup_server.catalog_index import CatalogIndex
from schemas.snapshot import (
    DATA_FILE, GLOBAL_KEY, PRODUCTS_DB, USERS_DB, Manifest, ProductRecord, SnapshotFormatError, UserRecord,
    parse_recs_db_name, product_key, recs_db_name, unpack_product, unpack_ranked_list, unpack_user, user_key,
    verify_snapshot_dir,
)

log = logging.getLogger(__name__)

# When items must be skipped, read this many more than asked so one read usually
# fills k; the whole list is decoded only when that was not enough.
SKIP_SLACK = 10

RankedList = tuple[tuple[int, ...], tuple[float, ...]]


@dataclass(frozen=True)
class UserLookup:
    """What a snapshot knows of one user, read in one transaction."""
    record: UserRecord | None     # activity and profile segment; None: not in the users database
    algorithms: frozenset[str]    # the user algorithms with a list for this user


# Why a version was refused, in one word: the ``reason`` label of the rejection metric.
REJECTION_REASONS = (
    "bad_pointer",        # CURRENT names no version folder
    "no_manifest",        # e.g. a folder moved into place before its writer finished
    "bad_manifest",       # unreadable, another format, or naming another version
    "file_missing",       # data.mdb, or a file the manifest lists, is not there
    "size_mismatch",      # a file's size is not the manifest's (truncated, half-copied)
    "checksum_mismatch",  # same size, other bytes
    "not_lmdb",           # LMDB cannot open the data file
    "bad_contents",       # a listed database missing or empty, a record off the layout
    "unreadable",         # the OS would not let us read it
    "error",              # anything nobody foresaw
)


class SnapshotOpenError(Exception):
    """A snapshot folder cannot be served; the message says why, ``reason`` (one of
    REJECTION_REASONS) says it in one word."""

    def __init__(self, message: str, reason: str = "error"):
        super().__init__(message)
        self.reason = reason


class SnapshotReader:
    """The verified snapshot in one ``<root>/<version>/`` folder.

    Obtain one with ``open_snapshot`` rather than the constructor: LMDB refuses to
    open the same data file twice in one process.
    """

    def __init__(self, path: Path, verify_checksums: bool = True):
        self.path = Path(path)
        try:
            self.manifest: Manifest = verify_snapshot_dir(self.path, check_checksums=verify_checksums)
        except SnapshotFormatError as exc:
            raise SnapshotOpenError(str(exc), exc.reason) from exc
        except OSError as exc:
            raise SnapshotOpenError(f"{self.path.name}: {exc}", "unreadable") from exc
        self.version = self.manifest.version
        # The data's cut-off: events after it are the real-time delta's to merge.
        self.as_of_epoch = _epoch(self.manifest.as_of)
        try:
            self._env = lmdb.open(str(self.path), readonly=True, lock=False, subdir=True,
                                  max_dbs=256, readahead=False)
        except lmdb.Error as exc:
            raise SnapshotOpenError(f"{self.version}: LMDB cannot open it: {exc}", "not_lmdb") from exc
        try:
            self._dbs = self._open_databases()
        except Exception as exc:  # whatever the contents got wrong, this version is not served
            self._env.close()
            raise SnapshotOpenError(f"{self.version}: {type(exc).__name__}: {exc}", "bad_contents") from exc
        # The catalogue's ids, categories and inactive products, read once: a request
        # then skips inactive items with a set lookup and finds categories with a binary
        # search, instead of an LMDB read per product.
        self._catalog = self._read_catalog()
        self._inactive = self._catalog.inactive
        self._algorithms: dict[str, tuple[str, ...]] = {}
        for name in sorted(self._dbs):
            parsed = parse_recs_db_name(name)
            if parsed is not None:
                kind, algorithm = parsed
                self._algorithms[kind] = self._algorithms.get(kind, ()) + (algorithm,)
        self._user_list_dbs = tuple((a, self._dbs[recs_db_name("user", a)]) for a in self.algorithms("user"))
        self.loaded_at = datetime.now(timezone.utc)

    def _open_databases(self) -> dict:
        """Open every database the manifest lists and decode its first record.

        Checksums are optional, so this cheap check is what catches a data file that
        is the right size but not the snapshot the manifest describes.
        """
        dbs = {}
        for name in self.manifest.databases:
            try:
                dbs[name] = self._env.open_db(name.encode("utf-8"), create=False)
            except lmdb.NotFoundError:
                raise SnapshotFormatError(f"database {name!r} listed in the manifest is missing") from None
        with self._env.begin(buffers=True) as txn:
            for name, db in dbs.items():
                with txn.cursor(db=db) as cursor:
                    if not cursor.first():
                        raise SnapshotFormatError(f"database {name!r} is empty, manifest says "
                                                  f"{self.manifest.databases[name]} rows")
                    key, value = cursor.item()
                    if name == PRODUCTS_DB:
                        unpack_product(int.from_bytes(key, "big"), value)
                    elif name == USERS_DB:
                        unpack_user(int.from_bytes(key, "big"), value)
                    elif parse_recs_db_name(name) is not None:
                        unpack_ranked_list(value, 1)
        return dbs

    def _read_catalog(self) -> CatalogIndex:
        db = self._dbs.get(PRODUCTS_DB)
        if db is None:
            return CatalogIndex(())
        with self._env.begin(buffers=True) as txn, txn.cursor(db=db) as cursor:
            return CatalogIndex(cursor)

    # --- what the snapshot holds ------------------------------------------

    def algorithms(self, kind: str) -> tuple[str, ...]:
        """Algorithms with a ``recs/<kind>/<algorithm>`` database, sorted by name."""
        return self._algorithms.get(kind, ())

    # --- lookups: each returns (ids, scores) best first, or None without a row

    def user_list(self, algorithm: str, user_id: int, k: int, *, active_only: bool = False,
                  exclude: frozenset[int] = frozenset()) -> RankedList | None:
        return self._ranked_list(recs_db_name("user", algorithm), user_key(user_id), k, active_only, exclude)

    def user_lookup(self, user_id: int) -> UserLookup:
        """The user's record and which algorithms have a list for them (one read
        transaction; no list decoded): what choosing among the lists, and falling
        back when there is none, needs to know without reading anything twice."""
        key = user_key(user_id)
        users = self._dbs.get(USERS_DB)
        with self._env.begin(buffers=True) as txn:
            record = None if users is None else txn.get(key, db=users)
            user = None if record is None else unpack_user(user_id, record)
            listed = frozenset(a for a, db in self._user_list_dbs if txn.get(key, db=db) is not None)
        return UserLookup(user, listed)

    def product_list(self, algorithm: str, product_id: int, k: int, *, active_only: bool = False,
                     exclude: frozenset[int] = frozenset()) -> RankedList | None:
        return self._ranked_list(recs_db_name("product", algorithm), product_key(product_id), k,
                                 active_only, exclude)

    def category_list(self, algorithm: str, category: str, k: int, *, active_only: bool = False,
                      exclude: frozenset[int] = frozenset()) -> RankedList | None:
        return self._ranked_list(recs_db_name("category", algorithm), category.encode("utf-8"), k,
                                 active_only, exclude)

    def segment_list(self, algorithm: str, segment: str, k: int, *, active_only: bool = False,
                     exclude: frozenset[int] = frozenset()) -> RankedList | None:
        return self._ranked_list(recs_db_name("segment", algorithm), segment.encode("utf-8"), k,
                                 active_only, exclude)

    def global_list(self, algorithm: str, k: int, *, active_only: bool = False,
                    exclude: frozenset[int] = frozenset()) -> RankedList | None:
        return self._ranked_list(recs_db_name("global", algorithm), GLOBAL_KEY, k, active_only, exclude)

    def product(self, product_id: int) -> ProductRecord | None:
        db = self._dbs.get(PRODUCTS_DB)
        if db is None:
            return None
        with self._env.begin(buffers=True) as txn:
            record = txn.get(product_key(product_id), db=db)
            return None if record is None else unpack_product(product_id, record)

    def categories(self, product_ids: Sequence[int]) -> set[str]:
        """The categories of those of ``product_ids`` the catalog has (no LMDB read)."""
        return self._catalog.category_names(product_ids)

    def active_in_catalog(self, product_ids: Sequence[int]) -> list[int]:
        """Those of ``product_ids`` the catalog has, active, in the given order (no LMDB read)."""
        catalog, inactive = self._catalog, self._inactive
        return [p for p in product_ids if p not in inactive and p in catalog]

    def user(self, user_id: int) -> UserRecord | None:
        """The user's activity and profile segment; None when the snapshot does not know them."""
        db = self._dbs.get(USERS_DB)
        if db is None:
            return None
        with self._env.begin(buffers=True) as txn:
            record = txn.get(user_key(user_id), db=db)
            return None if record is None else unpack_user(user_id, record)

    def _ranked_list(self, db_name: str, key: bytes, k: int, active_only: bool,
                     exclude: frozenset[int]) -> RankedList | None:
        """The first ``k`` items of one list, leaving out ``exclude`` and, when
        ``active_only``, products whose record says inactive (no record: kept).

        Everything is decoded inside the transaction: the buffers point into the map
        and are not valid after it ends.
        """
        db = self._dbs.get(db_name)
        if db is None:
            return None
        inactive = self._inactive if active_only else frozenset()
        with self._env.begin(buffers=True) as txn:
            record = txn.get(key, db=db)
            if record is None:
                return None
            if not inactive and not exclude:
                return unpack_ranked_list(record, k)
            wanted = k + len(exclude) + SKIP_SLACK
            ids, scores = unpack_ranked_list(record, wanted)
            kept = _keep(ids, scores, k, exclude, inactive)
            if len(kept[0]) < k and len(ids) == wanted:
                kept = _keep(*unpack_ranked_list(record), k, exclude, inactive)
            return kept

    def __repr__(self) -> str:
        return f"SnapshotReader({str(self.path)!r})"


def _keep(ids, scores, k: int, exclude: frozenset[int], inactive: frozenset[int]) -> RankedList:
    kept_ids: list[int] = []
    kept_scores: list[float] = []
    for product_id, score in zip(ids, scores):
        if product_id in exclude or product_id in inactive:
            continue
        kept_ids.append(product_id)
        kept_scores.append(score)
        if len(kept_ids) == k:
            break
    return tuple(kept_ids), tuple(kept_scores)


# Readers alive in this process, by (pid, device, inode) of their data file. LMDB
# refuses a second open of a file that is open, so asking for a version that is
# still alive (a rollback to it, or two apps in one test process) shares the reader.
_live_readers: "weakref.WeakValueDictionary[tuple[int, int, int], SnapshotReader]" = (
    weakref.WeakValueDictionary())
_live_readers_lock = threading.Lock()


def _epoch(iso_time: str) -> float:
    """Unix seconds of an ISO-8601 time (naive means UTC); 0 if unreadable (merge everything)."""
    try:
        moment = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def open_snapshot(path: Path, verify_checksums: bool = True) -> SnapshotReader:
    """A verified reader of the snapshot in ``path``; raise SnapshotOpenError saying why not."""
    path = Path(path)
    try:
        stat = (path / DATA_FILE).stat()
    except OSError as exc:
        reason = "file_missing" if isinstance(exc, FileNotFoundError) else "unreadable"
        raise SnapshotOpenError(f"{path.name}: {DATA_FILE} unreadable: {exc.strerror}", reason) from exc
    identity = (os.getpid(), stat.st_dev, stat.st_ino)
    with _live_readers_lock:
        reader = _live_readers.get(identity)
        if reader is None:
            reader = SnapshotReader(path, verify_checksums)
            _live_readers[identity] = reader
    return reader
