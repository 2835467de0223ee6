"""Implicit-feedback ALS solved by conjugate gradient, distributed over Spark: the
ALS job's default solver (``solver = "cg"``; ``"spark"`` is Spark ML's ALS).

Why not Spark ML's ALS: it solves every row's normal equations exactly, a
rank x rank Cholesky per user and per product each iteration, assembled from one
rank-one update per rating. Profiled, those solves were ~79 % of its fit, which
took 11-15x the ``implicit`` library's on the same data (bench/results/als_topk.md).
Conjugate gradient (Takacs, Pilaszy & Tikk, RecSys 2011) never forms that matrix:
a few CG steps per row, started from the row's factors of the last iteration, cost
O(ratings x rank) each, and converge as the iterations go on.

The per-row kernel is ``implicit``'s own (its native ``_least_squares_cg``, the
function its CPU fit calls), so what Spark adds is only the distribution:

- Once per fit, the ratings are collected to the driver (12 bytes each, one Arrow
  collect) and cut, per side, into blocks of consecutive dense indexes with about
  as many ratings each: a user block holds its users' rows of the confidence
  matrix as CSR arrays, an item block its items' columns (``side_blocks``). They
  go out once, as a cached RDD with one block per partition. At 12.9M ratings this
  took 13-19 s where range-partitioning and building the blocks on the executors
  took 46-82 s, and the driver holds both factor matrices anyway.
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
rank 32; the ratings pass through the driver once (12.9M: ~0.2 GB as arrays).
Past a few million rows a side (a few hundred MB in every worker) that stops
being cheap; Spark ML's ALS (``solver = "spark"``) keeps factors in the
executors' blocks instead (docs/scaling.md).
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pyspark import RDD, Broadcast, SparkContext, StorageLevel
from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# Ratings per block at most: a block is one task's work per half-iteration, and one
# pickled RDD element (12 bytes a rating).
MAX_BLOCK_RATINGS = 4_000_000
# Conjugate-gradient steps per row and half-iteration (implicit's default).
CG_STEPS = 3
INITIAL_SCALE = 0.01

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


def task_slots(master: str, default_parallelism: int) -> int:
    """Tasks Spark runs at once: a local master's thread count, else the default
    parallelism (on a cluster, all executor cores unless set otherwise)."""
    local = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master)
    if not local:
        return max(1, default_parallelism)
    threads = local.group(1)
    return (os.cpu_count() or 1) if threads == "*" else int(threads or 1)


def block_count(n_ratings: int, slots: int) -> int:
    """Blocks per side: a multiple of the task slots, so every wave of tasks fills
    them, and the smallest one that keeps a block within MAX_BLOCK_RATINGS. Not
    more: each block is one task of every half-iteration, and on 1M ratings over 2
    cores 2 blocks fitted in 8.3-9.0 s against 10.0-11.2 s for 4 (the default
    parallelism conf/spark.toml sets for shuffles)."""
    return slots * max(1, math.ceil(n_ratings / (slots * MAX_BLOCK_RATINGS)))


def csr_arrays(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
               n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, values) of the ``n_rows``-row CSR matrix with these entries,
    int32/int32/float32, columns ascending within a row."""
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols[order].astype(np.int32), values[order].astype(np.float32)


def side_blocks(rows: np.ndarray, cols: np.ndarray, confidence: np.ndarray, n_rows: int,
                n_blocks: int) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """``(first, indptr, indices, confidence)`` per block: the matrix of these entries
    cut into at most ``n_blocks`` ranges of consecutive rows with about as many
    entries each, each range's rows in CSR form, its row 0 being row ``first``."""
    indptr, indices, values = csr_arrays(rows, cols, confidence, n_rows)
    cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], n_blocks + 1)[1:-1]).tolist()
    starts = sorted({0, *cuts, n_rows})
    return [(first, indptr[first:stop + 1] - indptr[first], indices[indptr[first]:indptr[stop]],
             values[indptr[first]:indptr[stop]]) for first, stop in zip(starts, starts[1:])]


def cached_blocks(sc: SparkContext, blocks: list) -> tuple[RDD, list[Broadcast]]:
    """The blocks as an RDD, one per partition, cached and materialised, and the
    broadcasts it was built from (destroy them with the RDD: a lost partition is
    rebuilt from them). Each block travels as its own broadcast, read by the task that
    caches it: parallelizing the blocks themselves would put them into every task of
    every iteration (Spark's "task of very large size" warning, 4-12 MB a task)."""
    shared = [sc.broadcast(block) for block in blocks]
    rdd = (sc.parallelize(range(len(blocks)), len(blocks)).map(lambda index: shared[index].value)
           .persist(StorageLevel.MEMORY_AND_DISK))
    rdd.count()
    return rdd, shared


def block_solver(fixed, own, regularization: float, cg_steps: int) -> Callable:
    """The function of one half-iteration over cached blocks: ``fixed`` and ``own``
    are the broadcast factors of the other side and of this side (the starting
    point). Returns the block's ``(first, new factors)``."""

    def solve(block: tuple) -> tuple[int, np.ndarray]:
        from implicit.cpu._als import _least_squares_cg  # on the workers only
        first, indptr, indices, confidence = block
        start = np.array(own.value[first:first + len(indptr) - 1])  # a copy: the kernel writes it
        _least_squares_cg(indptr, indices, confidence, start, fixed.value, regularization, 1, cg_steps)
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
    table = ratings.select("user", "item", "rating").toArrow()
    users_of, items_of = table.column("user").to_numpy(), table.column("item").to_numpy()
    confidence = 1.0 + alpha * table.column("rating").to_numpy()
    del table
    count = n_blocks or block_count(len(confidence), task_slots(sc.master, sc.defaultParallelism))
    user_blocks, user_shared = cached_blocks(sc, side_blocks(users_of, items_of, confidence, n_users, count))
    item_blocks, item_shared = cached_blocks(sc, side_blocks(items_of, users_of, confidence, n_items, count))
    log.info("als cg: %d ratings in %d user and %d item blocks, %.1f s", len(confidence),
             user_blocks.getNumPartitions(), item_blocks.getNumPartitions(), time.monotonic() - started)

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
        for block in (*user_shared, *item_shared):
            block.destroy()
