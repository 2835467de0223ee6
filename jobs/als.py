"""ALS: collaborative-filtering candidates from implicit feedback.

Writes ``algorithm = 'als'`` rows of the candidates table:

- ``user``    per user, the top-N products by predicted preference, minus what the
              user bought (``exclude_purchased``);
- ``product`` per product, the top-K most similar products by cosine of the ALS
              item factors, the product itself left out.

and overwrites the ``item_factors`` Delta table (``product_id``, ``factors``,
``model_version``) so later work can fold a new user in at request time.

Confidence: per (user, product), ``rating = log1p(sum of decayed event weights)``
(weights and decay as in ``jobs.interactions.weighted``); implicit-feedback ALS
turns it into ``1 + alpha * rating``. The log keeps a user who viewed one product
300 times from outweighing everything else they did.

Solver (``solver``): ``"cg"``, the default, is conjugate-gradient ALS distributed
over Spark (``jobs.als_cg``: the ``implicit`` library's kernel per block of rows,
2-4x faster than Spark ML's here, regularisation added as it is); ``"spark"`` is
Spark ML's ALS (exact solves, regularisation scaled by each row's rating count),
which keeps the factors in the executors, the choice past a few million users.

Ids: ALS wants int32 ids, ours are int64 users and uint32 products, so both get a
dense 0..n-1 index (``dense_index``): the distinct ids are sorted, each row is
tagged with ``monotonically_increasing_id`` (partition number in the high bits,
row within partition in the low 33), and per-partition row counts -- one small
aggregate collected to the driver -- turn that into a dense rank. Everything
stays in the JVM, nothing funnels through one partition (unlike a window with
no partition key), and sorting makes the index reproducible run to run.

Top-K, for users and for similar products alike: exact, blocked, in numpy.
The item factors are collected once to the driver (one Arrow collect) and
broadcast: n x rank float32, so 1k x 32 = 128 KB, 100k x 32 = 12.8 MB, 1M x 32 =
128 MB. A ``mapInArrow`` task takes a slice of the queries -- user factors, or the
L2-normalised item factors themselves for cosine -- and, ``block_rows`` at a time,
computes one ``block x n`` matrix product (BLAS sgemm) against every item, masks
what must not be listed (the user's purchases, or the product itself) with
-inf, and keeps the top K per row (``top_k_lists``). Memory per task is one
block, at most 2^24 scores (64 MB); no pair ever becomes a Spark row, nothing is
shuffled. The matrix product writes every score to memory (rank 32 is too few
flops per score for the cache to help), ~2.5 ns per score on one core here: 1M
users x 100k products is ~2 min on 2 cores before any selection, and 1M products
100x that. Two ways around scoring, then ranking, every pair, both exact:

- Users: pruning by norm (``top_by_norm``). A dot product is at most the two
  norms' product, and implicit ALS gives popular items long factors and the long
  tail short ones (at 10M events: median norm 0.007, 99th percentile 0.33, largest
  2.2). So the items are ranked by norm and a user is scored against the first 8k
  (``SAMPLE_PER_K x k``), then 4x as many, and so on, stopping as soon as their
  k-th best beats ``|user| x`` the longest norm left. At 10M events 87 % of the
  users stopped at the first 8k of 98k items and the rest at 32k, and the job's
  lists (users' and similar products', written) took 98 s instead of 234 s, one
  run after the other. The lists are those of scoring every item up to float32
  rounding: BLAS sums a narrower product in another order, so scores move by
  ~1e-7 and near-equal ones can swap (at 10M events 157 of 961k users' lists
  ordered two such items differently, and 6 listed another item at the k-th
  place, with the same float32 score).
- Similar products (cosine, unit rows: nothing to prune by norm) and the rest of a
  ranking: only the items scoring at or above a floor are ranked, the floor being
  the k-th best of a random sample of the catalog (or of the prefix scored):
  ``argpartition`` over every score wrote an int64 index per score and took ~2.5x
  the matrix product's time; the floor and the ranking of ~2k candidates per row
  take ~1.2x it.

Why not the alternatives: ``ALSModel.recommendForAllUsers`` computes the same
scores but returns a fixed K per user, so purchases could only be removed after
the fact from an over-fetched list (a heavy buyer would get a short list), and
exploding, joining and re-ranking those rows cost more than the products
themselves (21 s vs ~4 s here). A cross-join of item blocks turns every pair
into a Spark row and shuffles it; ``BucketedRandomProjectionLSH`` is approximate
and its self-join is hard to bound on skewed buckets.

At 10M products neither the broadcast (1.3 GB) nor the n^2 similarities fit:
similar products would move to an approximate index (Faiss IVF-PQ or ScaNN,
built once, shipped to executors and queried per partition), and user lists to
the same index or to a candidate pool (popular + co-occurring products) re-scored
by the factors.

Run: ``python -m jobs.als --help`` or ``spark-submit jobs/als.py --help``.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.tables import ITEM_FACTORS

from jobs import als_cg
from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates
from jobs.cli import run_algorithm_job
from jobs.interactions import check_decay, purchased_pairs, read_interactions, weighted
from jobs.paths import DataPaths
from jobs.top_n import LISTS_SCHEMA, ranked_lists_batch, top_columns

log = logging.getLogger(__name__)

ALGORITHM = "als"
INT32_MAX = 2**31 - 1
SOLVERS = ("cg", "spark")
# Iterations between ALS checkpoints: without them a long run's lineage grows until
# the driver overflows its stack (Spark's advice: every ~10 iterations).
CHECKPOINT_INTERVAL = 10
# Upper bound on one block of scores (rows x catalog size), i.e. 64 MB of float32.
BLOCK_SCORES = 1 << 24
# Items sampled per list entry for the top-K floor (top_k_lists): 40 x 200 = 8k of a
# 100k catalog leaves ~2k items per row to rank (the fastest of 4k..32k measured).
# Also the first prefix of top_by_norm's items.
SAMPLE_PER_K = 40
# top_by_norm: each longer prefix of the norm-ranked items is this many times the last;
# the bound's slack covers float32 rounding of a rank-r dot product (~r x 6e-8 relative).
PREFIX_GROWTH = 4
NORM_BOUND_SLACK = 1e-4

# The item factors kept for request-time fold-in; overwritten by every run.
@dataclass(frozen=True)
class AlsParams:
    rank: int = 32
    max_iter: int = 10
    reg_param: float = 0.05
    alpha: float = 10.0
    half_life_days: float = 30.0
    top_n: int = 200
    similar_top_n: int = 50
    exclude_purchased: bool = True
    seed: int = 42
    solver: str = "cg"
    event_weights: dict[str, float] = field(default_factory=lambda: {
        "view": 1.0, "click": 1.0, "wishlist": 2.0, "add_to_cart": 4.0, "purchase": 8.0})

    def __post_init__(self):
        for name in ("rank", "max_iter", "top_n", "similar_top_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.exclude_purchased, bool):
            raise ValueError(f"exclude_purchased must be true or false, got {self.exclude_purchased!r}")
        if not (self.reg_param >= 0 and math.isfinite(self.reg_param)):  # also refuses NaN
            raise ValueError("reg_param must be a finite number >= 0")
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise ValueError("alpha must be a finite number >= 0")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        check_decay(self)
        if not any(w > 0 for w in self.event_weights.values()):
            raise ValueError("event_weights: at least one event type must weigh more than 0")


@contextmanager
def _timed(stage: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    log.info("als: %s took %.1f s", stage, time.monotonic() - started)


# --- pure transforms --------------------------------------------------------

def confidence_from_interactions(weighted_rows: DataFrame) -> DataFrame:
    """``(user_id, product_id, rating)``: ``log1p`` of each pair's summed decayed weight."""
    return (weighted_rows.groupBy("user_id", "product_id")
            .agg(F.log1p(F.sum("weight")).alias("rating")))


def dense_index(ids: DataFrame, column: str) -> DataFrame:
    """``(<column>, index)``: the distinct values of ``column``, numbered 0..n-1 in
    ascending order, ``index`` an int32. Raises if there are more than 2^31-1."""
    tagged = (ids.select(column).distinct().orderBy(column)
              .select(column, F.monotonically_increasing_id().alias("_tag"))
              # Materialised once: both the counts below and the index must see the
              # same partitioning of the sorted ids.
              .localCheckpoint(eager=True))
    part = F.shiftright(F.col("_tag"), 33)
    sizes = {r["part"]: r["n"] for r in tagged.groupBy(part.alias("part")).agg(F.count("*").alias("n")).collect()}
    total = sum(sizes.values())
    if total > INT32_MAX:
        raise ValueError(f"{total} distinct {column} values: ALS indexes them as int32 (at most {INT32_MAX})")
    offsets, running = [], 0
    for p in range(max(sizes, default=-1) + 1):
        offsets.append(running)
        running += sizes.get(p, 0)
    if not offsets:  # no rows at all
        return tagged.select(column, F.lit(0).cast("int").alias("index")).limit(0)
    offset = F.element_at(F.array(*[F.lit(o) for o in offsets]), (part + 1).cast("int"))
    row_in_part = F.col("_tag") - F.shiftleft(part, 33)
    return tagged.select(column, (offset + row_in_part).cast("int").alias("index"))


def als_ratings(confidence: DataFrame, users: DataFrame, products: DataFrame) -> DataFrame:
    """``(user, item, rating)`` with the dense int32 indexes ALS wants."""
    return (confidence.join(users.withColumnRenamed("index", "user"), "user_id")
            .join(products.withColumnRenamed("index", "item"), "product_id")
            .select("user", "item", "rating"))


def fit_als(ratings: DataFrame, params: AlsParams) -> ALSModel:
    """Spark ML's ALS on implicit feedback over ``(user, item, rating)`` rows."""
    # One factor block per core (Spark's default is 10): on 2 cores 10 blocks make each
    # iteration a train of tiny tasks, 5x slower on small data.
    blocks = ratings.sparkSession.sparkContext.defaultParallelism
    als = ALS(rank=params.rank, maxIter=params.max_iter, regParam=params.reg_param, alpha=params.alpha,
              implicitPrefs=True, nonnegative=False, coldStartStrategy="drop", seed=params.seed,
              userCol="user", itemCol="item", ratingCol="rating", numUserBlocks=blocks, numItemBlocks=blocks,
              # Only takes effect when the SparkContext has a checkpoint dir (run_als
              # sets one when max_iter needs it).
              checkpointInterval=CHECKPOINT_INTERVAL)
    return als.fit(ratings)


@dataclass(frozen=True)
class FactorFrames:
    """Fitted factors as ``(index, factors)`` frames, ``index`` the dense int32 index."""
    users: DataFrame
    items: DataFrame


def _factor_frame(spark: SparkSession, factors: np.ndarray) -> DataFrame:
    n, rank = factors.shape
    offsets = pa.array(np.arange(0, (n + 1) * rank, rank, dtype=np.int32))
    table = pa.table({"index": pa.array(np.arange(n, dtype=np.int32)),
                      "factors": pa.ListArray.from_arrays(offsets, pa.array(factors.reshape(-1)))})
    return spark.createDataFrame(table)


def fit_factors(ratings: DataFrame, n_users: int, n_items: int, params: AlsParams) -> FactorFrames:
    """User and item factors of ``(user, item, rating)`` rows indexed ``0..n_users-1`` and
    ``0..n_items-1``, by ``params.solver``."""
    if params.solver == "spark":
        model = fit_als(ratings, params)
        return FactorFrames(*(frame.select(F.col("id").alias("index"), F.col("features").alias("factors"))
                              for frame in (model.userFactors, model.itemFactors)))
    fitted = als_cg.fit(ratings, n_users, n_items, params.rank, params.max_iter, params.reg_param,
                        params.alpha, params.seed)
    spark = ratings.sparkSession
    return FactorFrames(_factor_frame(spark, fitted.users), _factor_frame(spark, fitted.items))


def item_factors(fitted: FactorFrames, products: DataFrame, version: str) -> DataFrame:
    """ITEM_FACTORS rows: each indexed product's factors under its real id."""
    return fitted.items.join(products, "index").select("product_id", "factors", F.lit(version).alias("model_version"))


def user_factors(fitted: FactorFrames, users: DataFrame) -> DataFrame:
    """``(user_id, factors)``: each indexed user's factors under its real id."""
    return fitted.users.join(users, "index").select("user_id", "factors")


@dataclass(frozen=True)
class ItemMatrix:
    """Item factors on the driver: ``factors[i]`` belongs to ``ids[i]``; ids ascending."""
    ids: np.ndarray      # int64, shape (n,)
    factors: np.ndarray  # float32, shape (n, rank)

    def __len__(self) -> int:
        return len(self.ids)


def _rows_of(ids: np.ndarray, product_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``product_ids`` found in the ascending ``ids``, their rows there)."""
    rows = np.minimum(np.searchsorted(ids, product_ids), len(ids) - 1)
    known = np.flatnonzero(ids[rows] == product_ids)
    return known, rows[known]


def collect_item_matrix(factors: DataFrame) -> ItemMatrix:
    """The ``(product_id, factors)`` frame as an ItemMatrix (one Arrow collect)."""
    table = factors.select("product_id", "factors").toArrow()
    ids = table.column("product_id").to_numpy()
    values = table.column("factors").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = values.astype(np.float32).reshape(len(ids), -1) if len(ids) else np.zeros((0, 0), np.float32)
    order = np.argsort(ids)
    return ItemMatrix(ids=ids[order], factors=matrix[order])




def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # An all-zero factor row has no direction: leave it zero, similarity 0 to everything.
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _block_rows(n_items: int, block_rows: int | None) -> int:
    return block_rows or max(1, BLOCK_SCORES // max(n_items, 1))


def top_k_lists(subject_ids: np.ndarray, queries: np.ndarray, items: np.ndarray, item_ids: np.ndarray, k: int,
                excluded: tuple[np.ndarray, np.ndarray], block_rows: int,
                sample_size: int | None = None, by_norm: bool = False) -> Iterator[pa.RecordBatch]:
    """Arrow batches of ``(subject_id, product_ids, scores)``: per query row, the ``k``
    items with the highest dot product, best first (ties: smaller id), leaving out
    the ``(query row, item row)`` pairs in ``excluded`` and subjects with nothing left.

    Computes at most ``block_rows x len(items)`` scores at a time, so memory stays
    bounded, and skips, exactly, items that cannot make a row's list:

    - ``by_norm`` (dot products, whose item norms vary): the items are ranked by
      norm, largest first, and a row is scored against longer and longer prefixes
      until its k-th best beats ``|query| x`` the largest norm left, which no later
      item can pass (``top_by_norm``; the first prefix is ``sample_size`` wide);
    - else (unit rows, cosine): the items are shuffled once (seeded), so the first
      ``sample_size`` columns of a block are a random sample: their k-th best score
      (exclusions applied) is a floor under the k-th best of all, and only items
      scoring at or above it are ranked (top_columns). Same result as ranking every
      item, which is what happens when the sample would not be smaller than the catalog.
    """
    excluded_rows, excluded_cols = excluded
    k = min(k, len(items))
    sample = SAMPLE_PER_K * k if sample_size is None else sample_size
    sampled = k <= sample < len(items)
    order = norms = None
    if by_norm:
        norms = np.linalg.norm(items, axis=1)
        order = np.argsort(-norms, kind="stable")
        norms = norms[order]
    elif sampled:
        order = np.random.default_rng(0).permutation(len(items))
    if order is not None:
        items, item_ids = items[order], item_ids[order]
        excluded_cols = np.argsort(order)[excluded_cols]
    for start in range(0, len(queries), block_rows):
        block = queries[start:start + block_rows]
        in_block = (excluded_rows >= start) & (excluded_rows < start + len(block))
        block_excluded = (excluded_rows[in_block] - start, excluded_cols[in_block])
        if by_norm:
            best, best_scores = top_by_norm(block, items, norms, k, block_excluded, max(sample, k))
        else:
            scores = block @ items.T
            scores[block_excluded] = -np.inf
            floor = np.partition(scores[:, :sample], sample - k, axis=1)[:, sample - k] if sampled else None
            best, best_scores = top_columns(scores, k, floor)
        yield ranked_lists_batch(subject_ids[start:start + len(block)], best, best_scores, item_ids)


def top_by_norm(queries: np.ndarray, items: np.ndarray, norms: np.ndarray, k: int,
                excluded: tuple[np.ndarray, np.ndarray], first_width: int) -> tuple[np.ndarray, np.ndarray]:
    """top_columns' ``(columns, values)`` of ``queries @ items.T`` with the ``excluded``
    ``(row, column)`` pairs at -inf, for ``items`` sorted by their ``norms``, largest
    first. A row is done at the first prefix of the items whose k-th best score is
    above ``|query| x norms[prefix length]``: by Cauchy-Schwarz no item after the
    prefix scores more, so its list is the prefix's (a small slack covers float32
    rounding). Prefixes start at ``first_width`` and grow PREFIX_GROWTH-fold, or to
    the whole catalog when fewer than half the rows were done, so a catalog of equal
    norms costs one narrow pass more than ranking everything."""
    n, excluded_rows, excluded_cols = len(items), *excluded
    best = np.zeros((len(queries), k), np.int64)
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    bounds = np.linalg.norm(queries.astype(np.float64), axis=1) * (1 + NORM_BOUND_SLACK)
    pending, width = np.arange(len(queries)), min(n, max(first_width, k))
    place = np.full(len(queries), -1)
    while len(pending):
        place[pending] = np.arange(len(pending))
        scores = queries[pending] @ items[:width].T
        hit = (place[excluded_rows] >= 0) & (excluded_cols < width)
        scores[place[excluded_rows[hit]], excluded_cols[hit]] = -np.inf
        kth = np.partition(scores, width - k, axis=1)[:, width - k]
        done = np.ones(len(pending), bool) if width == n else kth > bounds[pending] * norms[width]
        if done.any():
            best[pending[done]], best_scores[pending[done]] = top_columns(scores[done], k, kth[done])
        place[pending] = -1
        pending = pending[~done]
        width = n if done.mean() < 0.5 else min(n, width * PREFIX_GROWTH)
    return best, best_scores


def user_recommendations(users: DataFrame, items: ItemMatrix, purchased: DataFrame, params: AlsParams,
                         block_rows: int | None = None) -> DataFrame:
    """``(subject_id, product_ids, scores)``: per user of ``users`` (``user_id``,
    ``factors``), the ``top_n`` products by predicted preference (factor dot product),
    the ``purchased`` ``(user_id, product_id)`` pairs left out when
    ``params.exclude_purchased``. Exact, blocked like ``similar_products``; the
    purchases are masked before the top-N is taken, so a heavy buyer's list is
    as long as anyone's."""
    spark = users.sparkSession
    if not len(items):
        return spark.createDataFrame([], LISTS_SCHEMA)
    rows = users.select("user_id", "factors")
    if params.exclude_purchased:
        bought = purchased.groupBy("user_id").agg(F.collect_set("product_id").alias("bought"))
        rows = rows.join(bought, "user_id", "left")
    else:
        rows = rows.withColumn("bought", F.lit(None).cast("array<bigint>"))
    # Plain arrays, not the ItemMatrix: under `python -m jobs.als` its class lives in
    # __main__, which the Python workers cannot unpickle.
    shared = spark.sparkContext.broadcast((items.ids, items.factors))
    k, per_block = params.top_n, _block_rows(len(items), block_rows)

    def recommend(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids, factors = shared.value
        for batch in batches:
            if batch.num_rows == 0:
                continue
            queries = batch.column(1).flatten().to_numpy(zero_copy_only=False).reshape(batch.num_rows, -1)
            bought = batch.column(2)
            known, cols = _rows_of(ids, pc.list_flatten(bought).to_numpy(zero_copy_only=False))
            owners = pc.list_parent_indices(bought).to_numpy(zero_copy_only=False)[known]
            yield from top_k_lists(batch.column(0).to_numpy(), queries.astype(np.float32), factors,
                                   ids, k, (owners, cols), per_block, by_norm=True)

    return rows.mapInArrow(recommend, LISTS_SCHEMA)


def similar_products(spark: SparkSession, items: ItemMatrix, params: AlsParams,
                     block_rows: int | None = None) -> DataFrame:
    """``(subject_id, product_ids, scores)``: per product, the ``similar_top_n`` others
    with the highest cosine similarity of factors, best first (ties: smaller id).
    Exact and blocked (see the module docstring); ``block_rows`` overrides the rows
    per matrix product."""
    n = len(items)
    if n < 2:
        return spark.createDataFrame([], LISTS_SCHEMA)
    shared = spark.sparkContext.broadcast((items.ids, items.factors))
    k, per_block = params.similar_top_n, _block_rows(n, block_rows)

    def similar(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids, factors = shared.value
        unit = _unit_rows(factors)
        for batch in batches:
            rows = batch.column(0).to_numpy()
            # The product itself is excluded: (row j of this batch, item row rows[j]).
            yield from top_k_lists(ids[rows], unit[rows], unit, ids, k, (np.arange(len(rows)), rows), per_block)

    parts = max(spark.sparkContext.defaultParallelism, math.ceil(n / 20_000))
    return spark.range(0, n, numPartitions=parts).mapInArrow(similar, LISTS_SCHEMA)


def als_candidates(interaction_rows: DataFrame, as_of: datetime, params: AlsParams,
                   product_lists: bool = True, for_users: DataFrame | None = None) -> tuple[DataFrame, DataFrame]:
    """``(candidates, item_factors)``: ALS user and product lists in the CANDIDATES
    layout, and the fitted item factors in the ITEM_FACTORS layout. Without
    ``product_lists`` only the user lists (all an offline evaluation scores).
    ``for_users`` (``user_id`` rows): user lists for these users only, each the same
    as in a run for everyone: the model is fitted on every user's interactions all
    the same.

    Fits the model and collects the item factors (Spark actions run here); the
    frames returned are lazy over the fitted factors.
    """
    version = model_version(ALGORITHM, as_of, asdict(params))
    with _timed("confidence and dense user/product indexes"):
        # Cached: the two indexes and the ratings all derive from it.
        confidence = confidence_from_interactions(weighted(interaction_rows, as_of, params)).cache()
        users = dense_index(confidence, "user_id")
        products = dense_index(confidence, "product_id")
    if users.isEmpty():  # ALS cannot fit nothing; an empty run must not wipe the last lists
        raise ValueError(f"no interactions with a positive weight up to {as_of:%Y-%m-%dT%H:%M:%SZ}")
    n_users, n_products = users.count(), products.count()
    with _timed(f"fit ({params.solver} solver, rank {params.rank}, {params.max_iter} iterations)"):
        fitted = fit_factors(als_ratings(confidence, users, products), n_users, n_products, params)
    confidence.unpersist()
    factors = item_factors(fitted, products, version).cache()
    with _timed("item factors collected"):
        items = collect_item_matrix(factors)
    log.info("als: %d users, %d products with factors", n_users, len(items))

    purchased = purchased_pairs(interaction_rows, as_of)
    listed = user_factors(fitted, users)
    if for_users is not None:
        listed = listed.join(for_users, "user_id", "left_semi")
    user_lists = user_recommendations(listed, items, purchased, params)
    candidates = as_candidates(user_lists, "user", ALGORITHM, version)
    if product_lists:
        similar = similar_products(factors.sparkSession, items, params)
        candidates = candidates.unionByName(as_candidates(similar, "product", ALGORITHM, version))
    return candidates, factors.select(*ITEM_FACTORS.names)


# --- I/O edges --------------------------------------------------------------

def params_from_settings(settings: dict) -> AlsParams:
    return AlsParams(**settings)


def run_als(spark: SparkSession, paths: DataPaths, as_of: datetime, params: AlsParams) -> dict:
    """Fit ALS, store its candidate lists and item factors; return what was written."""
    started = time.monotonic()
    sc = spark.sparkContext
    if params.max_iter > CHECKPOINT_INTERVAL and sc.getCheckpointDir() is None:
        sc.setCheckpointDir(str(paths.checkpoints / "als"))
    with _timed("interactions table opened"):
        interaction_rows = read_interactions(spark, paths)
    candidates, factors = als_candidates(interaction_rows, as_of, params)
    with _timed("user and similar-product lists, written"):
        counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, candidates)
    with _timed("item factors, written"):
        (factors.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
         .save(paths.table(ITEM_FACTORS.name)))
    n_factors = spark.read.format("delta").load(paths.table(ITEM_FACTORS.name)).count()
    summary = {"algorithm": ALGORITHM, "lists": counts, "item_factors": n_factors,
               "model_version": model_version(ALGORITHM, as_of, asdict(params)),
               "seconds": round(time.monotonic() - started, 1)}
    log.info("als done: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_algorithm_job(argv, __doc__.split("\n\n")[0], ALGORITHM, "als", params_from_settings, run_als)


if __name__ == "__main__":
    sys.exit(main())
