"""Implicit-feedback ALS solved by conjugate gradient, distributed over Spark: the
ALS job's default solver (``solver = "cg"``; ``"spark"`` is Spark ML's ALS).

Why not Spark ML's ALS: it solves every row's normal equations exactly, a
rank x rank Cholesky per user and per product each iteration, assembled from one
rank-one update per rating. Profiled, those solves were ~79 % of its fit, which
took 13.7x the ``implicit`` library's on the same data (bench/results/als_blas.md,
als_topk.md). Conjugate gradient (Takacs, Pilaszy & Tikk, RecSys 2011) never forms
that matrix: a few CG steps per row, started from the row's factors of the last
iteration, cost O(ratings x rank) each, and converge as the iterations go on.

The per-row kernel is ``implicit``'s own (its native ``_least_squares_cg``, the
function its CPU fit calls), so what Spark adds is only the distribution:

- Once per fit, the ratings are grouped into blocks of consecutive dense indexes,
  per side: a user block holds its users' rows of the confidence matrix, an item
  block its items' columns, each block one row of CSR arrays (``build_blocks``),
  cached as an RDD with one block per partition.
- Each half-iteration broadcasts the other side's factors and, per block, solves
  the block's rows with one thread (Spark runs one task per core), starting from
  their previous factors; the new rows are collected to the driver. The side
  being solved was the fixed side of the half-iteration before, so its previous
  factors are broadcast already: one new broadcast per half-iteration.

Semantics, as implicit 0.7.3 given ``c`` as its matrix value: an observed pair has
preference 1 and confidence ``c = 1 + alpha * rating`` (Spark ML's too), a missing
pair preference 0 and confidence 1; the regularisation is added as it is, not
multiplied by the row's rating count as Spark ML's ALS-WR does; the initial
factors are drawn as implicit draws them (``default_rng(seed)``, users then items,
uniform in [0, 0.01)). So a fit here is implicit's fit with the same seed, factor
for factor (tests/test_als_cg.py), only distributed.

Limits: both factor matrices live on the driver and, broadcast, in every Python
worker: (users + items) x rank x 4 bytes, 141 MB for 1M users and 100k items at
rank 32. Past ~10M rows a side that stops being cheap; Spark ML's ALS
(``solver = "spark"``) keeps factors in the executors' blocks instead.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
from pyspark import RDD, StorageLevel
from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# Ratings per block at most: one block is one row of CSR arrays (12 bytes a rating)
# and one task's work per half-iteration.
MAX_BLOCK_RATINGS = 4_000_000
# Conjugate-gradient steps per row and half-iteration (implicit's default).
CG_STEPS = 3
INITIAL_SCALE = 0.01

BLOCK_SCHEMA = "first int, indptr binary, indices binary, confidence binary"


@dataclass(frozen=True)
class Factors:
    """Row i of ``users`` (``items``) belongs to dense user (item) index i."""
    users: np.ndarray  # float32, (n_users, rank)
    items: np.ndarray  # float32, (n_items, rank)


def initial_factors(n_users: int, n_items: int, rank: int, seed: int) -> Factors:
    """implicit 0.7.3's initial factors for ``random_state=seed`` (its ``fit``)."""
    rng = np.random.default_rng(seed)
    return Factors(users=rng.random((n_users, rank), dtype=np.float32) * INITIAL_SCALE,
                   items=rng.random((n_items, rank), dtype=np.float32) * INITIAL_SCALE)


def block_count(n_ratings: int, parallelism: int) -> int:
    """Blocks per side: one per core at least, more when a block would pass MAX_BLOCK_RATINGS."""
    return max(parallelism, math.ceil(n_ratings / MAX_BLOCK_RATINGS))


def csr_arrays(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
               n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, values) of the ``n_rows``-row CSR matrix with these entries,
    int32/int32/float32, columns ascending within a row."""
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols[order].astype(np.int32), values[order].astype(np.float32)


def build_blocks(ratings: DataFrame, row: str, col: str, n_blocks: int, alpha: float) -> DataFrame:
    """BLOCK_SCHEMA rows, one per partition: the ``(row, col, rating)`` rows split into
    at most ``n_blocks`` ranges of consecutive ``row`` indexes with about as many
    ratings each, and each range as the CSR arrays of its rows (columns ``col``,
    values ``1 + alpha * rating``), row 0 being index ``first``. Later mapInArrow
    calls over the cached result keep its partitions, one block each."""

    def build(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [b for b in batches if b.num_rows]
        if not parts:
            return
        table = pa.Table.from_batches(parts)
        rows = table.column(row).to_numpy()
        first = int(rows.min())
        confidence = 1.0 + alpha * table.column("rating").to_numpy()
        indptr, indices, values = csr_arrays(rows - first, table.column(col).to_numpy(), confidence,
                                             int(rows.max()) - first + 1)
        yield pa.RecordBatch.from_pydict({"first": pa.array([first], pa.int32()), "indptr": [indptr.tobytes()],
                                          "indices": [indices.tobytes()], "confidence": [values.tobytes()]})

    return ratings.select(row, col, "rating").repartitionByRange(n_blocks, row).mapInArrow(build, BLOCK_SCHEMA)


def _writable(buffer, dtype) -> np.ndarray:
    # implicit's kernel takes typed memoryviews, which refuse read-only buffers.
    return np.require(np.frombuffer(buffer, dtype), requirements="W")


def block_solver(fixed, own, regularization: float, cg_steps: int) -> Callable:
    """The function of one half-iteration over cached blocks: ``fixed`` and ``own``
    are the broadcast factors of the other side and of this side (the starting
    point). Returns the block's ``(first, new factors)``."""

    def solve(block: tuple) -> tuple[int, np.ndarray]:
        from implicit.cpu._als import _least_squares_cg  # on the workers only
        first, indptr, indices, confidence = block
        indptr = _writable(indptr, np.int32)
        start = np.array(own.value[first:first + len(indptr) - 1])  # a copy: the kernel writes it
        _least_squares_cg(indptr, _writable(indices, np.int32), _writable(confidence, np.float32),
                          start, fixed.value, regularization, 1, cg_steps)
        return first, start

    return solve


def solve_side(blocks: RDD, fixed, own, shape: tuple[int, int], regularization: float,
               cg_steps: int) -> np.ndarray:
    """New factors for every row of one side, assembled on the driver."""
    solved, filled = np.empty(shape, np.float32), 0
    for first, rows in blocks.map(block_solver(fixed, own, regularization, cg_steps)).collect():
        solved[first:first + len(rows)] = rows
        filled += len(rows)
    if filled != shape[0]:  # every index has a rating, so the blocks cover every row once
        raise RuntimeError(f"als cg: blocks covered {filled} of {shape[0]} rows")
    return solved


def fit(ratings: DataFrame, n_users: int, n_items: int, rank: int, iterations: int, regularization: float,
        alpha: float, seed: int, cg_steps: int = CG_STEPS, n_blocks: int | None = None) -> Factors:
    """ALS on ``(user, item, rating)`` rows with dense indexes ``0..n_users-1`` and
    ``0..n_items-1``; ``n_blocks`` overrides the blocks per side (block_count's choice)."""
    sc = ratings.sparkSession.sparkContext
    factors = initial_factors(n_users, n_items, rank, seed)
    started = time.monotonic()
    cached_here = not ratings.is_cached  # read three times below; a caller's cache stays
    if cached_here:
        ratings = ratings.persist(StorageLevel.MEMORY_AND_DISK)
    n_ratings = ratings.count()
    sides = []
    count = n_blocks or block_count(n_ratings, sc.defaultParallelism)
    for row, col in (("user", "item"), ("item", "user")):
        # As tuples of an RDD: the half-iterations read them with the least conversion.
        side = build_blocks(ratings, row, col, count, alpha).rdd.map(tuple).persist(StorageLevel.MEMORY_AND_DISK)
        side.count()  # materialised here, so the iterations only read it
        sides.append(side)
    if cached_here:
        ratings.unpersist()
    user_blocks, item_blocks = sides
    log.info("als cg: %d ratings in %d blocks a side, %.1f s", n_ratings, count, time.monotonic() - started)

    x, y = factors.users, factors.items
    users, items = sc.broadcast(x), sc.broadcast(y)
    try:
        for iteration in range(1, iterations + 1):
            began = time.monotonic()
            x = solve_side(user_blocks, items, users, x.shape, regularization, cg_steps)
            users.destroy()
            users = sc.broadcast(x)
            y = solve_side(item_blocks, users, items, y.shape, regularization, cg_steps)
            items.destroy()
            items = sc.broadcast(y)
            log.info("als cg: iteration %d/%d, %.1f s", iteration, iterations, time.monotonic() - began)
        return Factors(users=x, items=y)
    finally:
        users.destroy()
        items.destroy()
        user_blocks.unpersist()
        item_blocks.unpersist()
