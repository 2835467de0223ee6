"""A snapshot of the production shape at any size, written without Spark.

Every user ``0 .. users-1`` (or each of ``user_ids``: one shard's users) gets a list
of ``list_length`` products per algorithm and a ``users`` record; every product a
catalog record, an ALS neighbour list and a category; every category and profile
segment a popular list; one global list. Ids are drawn with a Zipf-like skew, as real
traffic concentrates on few products. The records are packed with NumPy a block at a
time, in the layout of ``schemas.snapshot``, and written with the real ``SnapshotWriter``.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from jobs.snapshot_packing import equal_length_lists
from jobs.snapshot_writer import SnapshotWriter, publish
from schemas.snapshot import (
    GLOBAL_KEY, PRODUCTS_DB, USERS_DB, Manifest, pack_product, pack_ranked_list, pack_user,
    product_key, recs_db_name, user_key,
)

log = logging.getLogger("bench.serving")

ALGORITHMS = ("hybrid", "als", "content", "popular")
CATEGORIES = 200
SEGMENTS = ("country=US|age_band=25-34", "country=DE|age_band=25-34", "country=GB|age_band=35-44")
BLOCK = 20_000


def _skewed_ids(rng: np.random.Generator, shape: tuple[int, int], products: int) -> np.ndarray:
    """Rows of distinct product ids: ``start + stride * j (mod products)`` with a
    stride coprime to ``products`` (so no repeats) and a start drawn with a Pareto
    skew, so popular products appear in more lists, as in real data."""
    rows, n = shape
    if n > products:
        raise ValueError(f"a list of {n} needs at least {n} products")
    coprime = np.array([s for s in (1, 3, 7, 11, 13, 17, 19, 23, 29, 31) if math.gcd(s, products) == 1])
    starts = np.minimum((rng.pareto(1.2, rows) * products / 50).astype(np.int64), products - 1)
    strides = rng.choice(coprime, rows)
    return ((starts[:, None] + strides[:, None] * np.arange(n)) % products).astype(np.uint32)


def _packed_lists(ids: np.ndarray) -> list[bytes]:
    """One ranked-list record per row of ``ids`` (scores decreasing), packed as a block."""
    rows, n = ids.shape
    scores = np.broadcast_to(1.0 / np.arange(1, n + 1, dtype=np.float32), (rows, n))
    return equal_length_lists(ids.astype("<u4"), scores)


def _user_keys(user_ids: np.ndarray) -> list[bytes]:
    return [user_key(u) for u in user_ids.tolist()]


def write_snapshot(root: Path, version: str, users: int, products: int, list_length: int = 100,
                   algorithms: tuple[str, ...] = ALGORITHMS, seed: int = 1, as_of: str | None = None,
                   user_ids: Sequence[int] | None = None) -> dict:
    """Write and publish ``root/<version>``; return its size and how long it took.
    ``user_ids``, when given, replaces ``0 .. users-1`` (a shard holds only its users)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(users, dtype=np.int64) if user_ids is None else np.asarray(user_ids, dtype=np.int64)
    users = len(ids)
    started = time.perf_counter()
    as_of = as_of or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    with SnapshotWriter(root, version, map_size_bytes=1 << 40) as writer:
        for algorithm in algorithms:
            db = recs_db_name("user", algorithm)
            for start in range(0, users, BLOCK):
                stop = min(users, start + BLOCK)
                lists = _skewed_ids(rng, (stop - start, list_length), products)
                for key, value in zip(_user_keys(ids[start:stop]), _packed_lists(lists)):
                    writer.put(db, key, value)
            log.info("user lists of %s written (%.0f s)", algorithm, time.perf_counter() - started)
        activity = np.where(rng.random(users) < 0.3, "light", "heavy")
        for start in range(0, users, BLOCK):
            stop = min(users, start + BLOCK)
            for key, a, u in zip(_user_keys(ids[start:stop]), activity[start:stop], ids[start:stop].tolist()):
                writer.put(USERS_DB, key, pack_user(str(a), SEGMENTS[u % len(SEGMENTS)]))
        similar_db = recs_db_name("product", "als")
        for start in range(0, products, BLOCK):
            stop = min(products, start + BLOCK)
            ids = _skewed_ids(rng, (stop - start, 50), products)
            keys = [product_key(p) for p in range(start, stop)]
            for product_id, key, value in zip(range(start, stop), keys, _packed_lists(ids)):
                writer.put(similar_db, key, value)
                writer.put(PRODUCTS_DB, key, pack_product(f"c{product_id % CATEGORIES}", 10.0, True))
        popular = np.arange(products, dtype=np.uint32)
        for category in range(CATEGORIES):
            members = popular[popular % CATEGORIES == category][:200]
            writer.put(recs_db_name("category", "popular"), f"c{category}".encode(),
                       pack_ranked_list(members.tolist(), [1.0 / (i + 1) for i in range(len(members))]))
        for i, segment in enumerate(SEGMENTS):
            members = popular[i::len(SEGMENTS)][:200]
            writer.put(recs_db_name("segment", "popular"), segment.encode(),
                       pack_ranked_list(members.tolist(), [1.0 / (j + 1) for j in range(len(members))]))
        writer.put(recs_db_name("global", "popular"), GLOBAL_KEY,
                   pack_ranked_list(popular[:200].tolist(), [1.0 / (i + 1) for i in range(200)]))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        path = writer.finish(Manifest(version="", created_at=now, as_of=as_of))
    publish(root, version, keep_versions=1)
    size = (path / "data.mdb").stat().st_size
    return {"seconds": round(time.perf_counter() - started, 1), "bytes": size,
            "bytes_per_user": round(size / max(users, 1))}
