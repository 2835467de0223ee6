"""EASE: item-item collaborative candidates in closed form (Steck, "Embarrassingly
Shallow Autoencoders for Sparse Data", WWW 2019).

Writes ``algorithm = 'ease'`` rows of the candidates table:

- ``user``    per user, the top-N products of the user's interaction row times B,
              minus what the user bought (``exclude_purchased``);
- ``product`` per product i, the top-K products j by B[i, j]: what interacting
              with i says most for j.

The model is one item x item matrix, B = I - P diag(1 / diag(P)) with
P = (XᵀX + l2 I)⁻¹, X the user x item matrix of interactions (1 per pair with a
positive decayed weight, or ``log1p`` of that weight: ``value``). B's diagonal is
zero: an item never explains itself, so the model learns which other items do.

Where it fits: X's Gram matrix and its inverse are dense, 8 n² bytes each on the
driver (float64) and B is broadcast to the executors as float32 (4 n² bytes), so
the ``exact`` method models at most ``max_items`` items, those with the most users
(10k items: 800 MB each on the driver, 400 MB per Python worker; the inverse costs
~n³ flops). The driver also holds the interaction pairs of the modelled items while
X is built, ~16 bytes per pair.

Beyond that catalog size, the ``knn`` method: a shrunk-cosine item-item model
computed with Spark, S[i, j] = c_ij / (sqrt(n_i n_j) + shrink), c_ij the users'
co-occurrences (sum of x_ui x_uj, each user's ``max_user_items`` heaviest items), n_i
the item's sum of squares, each row pruned to its ``neighbours`` best. Chosen over a
sparse approximate inverse (SANSA): it is a self-join and two aggregations Spark
does well, every item with ``min_item_users`` users is modelled, and the driver holds
only the pruned S (~12 bytes per entry); its quality cost against the exact inverse
is measured in bench/results/ease_variants.md. ``auto`` (the default) takes ``exact``
while the items with ``min_item_users`` users fit in ``max_items``, else ``knn``.

Scoring is ALS's pattern: a ``mapInArrow`` task takes a batch of users (their
modelled items as lists), multiplies the sparse rows by B or S (scipy), masks the
purchases, keeps the top N per row (jobs.top_n.top_columns).

Run: ``python -m jobs.ease --help`` or ``spark-submit jobs/ease.py --help``.
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
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from scipy import sparse
from scipy.linalg import lapack

from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates
from jobs.cli import run_algorithm_job
from jobs.interactions import check_decay, purchased_pairs, read_interactions, weighted
from jobs.paths import DataPaths
from jobs.top_n import LISTS_SCHEMA, ranked_lists_batch, top_columns

log = logging.getLogger(__name__)

ALGORITHM = "ease"
VALUES = ("binary", "log_weight")
METHODS = ("auto", "exact", "knn")
# Upper bound on one block of scores (rows x modelled items): 64 MB of float32.
BLOCK_SCORES = 1 << 24


@dataclass(frozen=True)
class EaseParams:
    l2: float = 400.0            # the ridge penalty lambda: larger, smoother, more popular
    value: str = "binary"        # X's entries: 1 per pair, or log1p of its decayed weight
    max_items: int = 10_000      # exact: items with the most users, modelled; the rest get no lists
    min_item_users: int = 2      # an item needs this many users to be modelled
    method: str = "auto"         # "exact" (the inverse), "knn" (pruned shrunk cosine), "auto": exact if it fits
    neighbours: int = 100        # knn: each item's most similar items kept
    shrink: float = 10.0         # knn: added to the cosine's denominator (rare pairs count less)
    max_user_items: int = 200    # knn: each user's heaviest items in the co-occurrence self-join
    half_life_days: float = 30.0
    top_n: int = 200
    similar_top_n: int = 50
    exclude_purchased: bool = True
    event_weights: dict[str, float] = field(default_factory=lambda: {
        "view": 1.0, "click": 1.0, "wishlist": 2.0, "add_to_cart": 4.0, "purchase": 8.0})

    def __post_init__(self):
        for name in ("max_items", "min_item_users", "top_n", "similar_top_n", "neighbours", "max_user_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        if isinstance(self.l2, bool) or not (isinstance(self.l2, (int, float)) and self.l2 > 0
                                             and math.isfinite(self.l2)):
            raise ValueError(f"l2 must be a finite number > 0, got {self.l2!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.shrink, bool) or not (isinstance(self.shrink, (int, float)) and self.shrink >= 0):
            raise ValueError(f"shrink must be a number >= 0, got {self.shrink!r}")
        if self.value not in VALUES:
            raise ValueError(f"value must be one of {', '.join(VALUES)}, got {self.value!r}")
        if not isinstance(self.exclude_purchased, bool):
            raise ValueError(f"exclude_purchased must be true or false, got {self.exclude_purchased!r}")
        check_decay(self)
        if not any(w > 0 for w in self.event_weights.values()):
            raise ValueError("event_weights: at least one event type must weigh more than 0")


@contextmanager
def _timed(stage: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    log.info("ease: %s took %.1f s", stage, time.monotonic() - started)


# --- the model, in NumPy ----------------------------------------------------

def ease_weights(interactions: sparse.csr_matrix, l2: float) -> np.ndarray:
    """B (float32, items x items, zero diagonal) for the users x items matrix ``interactions``."""
    gram = (interactions.T @ interactions).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    # XᵀX + l2 I is symmetric positive definite: a Cholesky inverse is half LU's work.
    factor, info = lapack.dpotrf(gram, lower=False, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (info={info})")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverse from the Cholesky factor failed (info={info})")
    inverse = np.triu(inverse) + np.triu(inverse, 1).T  # dpotri fills the upper triangle only
    weights = inverse / -np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def rows_matrix(rows: np.ndarray, columns: np.ndarray, values: np.ndarray, n_rows: int,
                n_items: int) -> sparse.csr_matrix:
    """The ``n_rows x n_items`` float32 CSR matrix with ``values`` at ``(rows, columns)``."""
    return sparse.csr_matrix((values.astype(np.float32), (rows, columns)), shape=(n_rows, n_items))


def best_of_rows(subjects: np.ndarray, scores: np.ndarray, excluded: tuple[np.ndarray, np.ndarray],
                 item_ids: np.ndarray, k: int) -> pa.RecordBatch:
    """Per row of ``scores`` (rows x items), the ``k`` best items (ties: smaller id), the
    ``excluded`` ``(row, column)`` pairs left out (``scores`` is overwritten there)."""
    scores[excluded[0], excluded[1].astype(np.int64)] = -np.inf
    columns, values = top_columns(scores, min(k, scores.shape[1]))
    return ranked_lists_batch(subjects, columns, values, item_ids)


def as_scores(block) -> np.ndarray:
    """A block of scores or weights as a float32 array. A sparse one (knn's) is expanded
    and its zeros, where no neighbour said anything, become -inf: never listed."""
    if not sparse.issparse(block):
        return np.asarray(block, dtype=np.float32)
    scores = block.toarray().astype(np.float32)
    scores[scores == 0] = -np.inf
    return scores


@dataclass(frozen=True)
class EaseModel:
    """B (or S) on the driver: ``weights[i, j]`` links item ``ids[i]`` to item ``ids[j]``; ids ascending."""
    ids: np.ndarray                               # int64, (n,)
    weights: np.ndarray | sparse.csr_matrix       # float32, (n, n): dense B, or knn's pruned S


# --- Spark: data in, lists out ----------------------------------------------

def worth_modelling(pairs: DataFrame, params: EaseParams) -> np.ndarray:
    """The ids of the products with at least ``min_item_users`` users, most users first
    (ties: smaller id)."""
    counts = (pairs.groupBy("product_id").agg(F.count("*").alias("users"))
              .where(F.col("users") >= params.min_item_users)
              .orderBy(F.col("users").desc(), "product_id"))
    return counts.select("product_id").toArrow().column(0).to_numpy()


def chosen_method(candidates: int, params: EaseParams) -> str:
    """``exact`` or ``knn`` for ``candidates`` products worth modelling: ``auto`` takes
    exact while they fit in ``max_items``."""
    if params.method != "auto":
        return params.method
    return "exact" if candidates <= params.max_items else "knn"


def knn_neighbours(pairs: DataFrame, params: EaseParams) -> DataFrame:
    """``(i, j, similarity)``: for each product i of ``pairs``, its ``neighbours`` others
    j by shrunk cosine over the users' co-occurrences (ties: smaller j)."""
    heaviest = Window.partitionBy("user_id").orderBy(F.col("value").desc(), "product_id")
    kept = (pairs.withColumn("_n", F.row_number().over(heaviest)).where(F.col("_n") <= params.max_user_items)
            .select("user_id", "product_id", F.col("value").cast("double").alias("value")))
    left = kept.select("user_id", F.col("product_id").alias("i"), F.col("value").alias("vi"))
    right = kept.select("user_id", F.col("product_id").alias("j"), F.col("value").alias("vj"))
    together = (left.join(right, "user_id").where(F.col("i") != F.col("j"))
                .groupBy("i", "j").agg(F.sum(F.col("vi") * F.col("vj")).alias("c")))
    norms = kept.groupBy("product_id").agg(F.sum(F.col("value") * F.col("value")).alias("n"))
    similarity = (together
                  .join(F.broadcast(norms.select(F.col("product_id").alias("i"), F.col("n").alias("ni"))), "i")
                  .join(F.broadcast(norms.select(F.col("product_id").alias("j"), F.col("n").alias("nj"))), "j")
                  .select("i", "j", (F.col("c") / (F.sqrt(F.col("ni") * F.col("nj")) + F.lit(float(params.shrink))))
                          .alias("similarity")))
    best = Window.partitionBy("i").orderBy(F.col("similarity").desc(), "j")
    return (similarity.withColumn("_n", F.row_number().over(best)).where(F.col("_n") <= params.neighbours)
            .drop("_n"))


def knn_weights(neighbours: pa.Table, ids: np.ndarray) -> sparse.csr_matrix:
    """S (float32 CSR, items x items in ``ids``' order) from ``(i, j, similarity)`` rows."""
    rows = np.searchsorted(ids, neighbours.column("i").to_numpy())
    columns = np.searchsorted(ids, neighbours.column("j").to_numpy())
    values = neighbours.column("similarity").to_numpy().astype(np.float32)
    return sparse.csr_matrix((values, (rows, columns)), shape=(len(ids), len(ids)))



def interaction_pairs(rows: DataFrame, as_of: datetime, params: EaseParams) -> DataFrame:
    """``(user_id, product_id, value)``: one row per pair with a positive decayed weight."""
    summed = weighted(rows, as_of, params).groupBy("user_id", "product_id").agg(F.sum("weight").alias("weight"))
    value = F.lit(1.0) if params.value == "binary" else F.log1p("weight")
    return summed.select("user_id", "product_id", value.cast("float").alias("value"))


def fit(pairs: DataFrame, params: EaseParams) -> tuple[EaseModel, DataFrame]:
    """The model, and ``(product_id, item)``: each modelled product's row in it."""
    spark = pairs.sparkSession
    with _timed("modelled items chosen"):
        candidates = worth_modelling(pairs, params)
    method = chosen_method(len(candidates), params)
    # exact: the max_items with the most users; knn: all of them. Ascending: B's order.
    ids = np.sort(candidates[:params.max_items] if method == "exact" else candidates)
    log.info("ease: %s method over %d of %d products worth modelling", method, len(ids), len(candidates))
    if not len(ids):
        raise ValueError(f"no product has {params.min_item_users} or more users: nothing for EASE to model")
    index = spark.createDataFrame(pa.table({"product_id": pa.array(ids, pa.int64()),
                                            "item": pa.array(np.arange(len(ids), dtype=np.int32))}))
    if method == "knn":
        with _timed(f"knn S for {len(ids)} items ({params.neighbours} neighbours, shrink {params.shrink:g})"):
            modelled = pairs.join(F.broadcast(index.select("product_id")), "product_id")
            weights = knn_weights(knn_neighbours(modelled, params).toArrow(), ids)
        return EaseModel(ids=ids.astype(np.int64), weights=weights), index
    with _timed("interactions of the modelled items collected"):
        table = (pairs.join(F.broadcast(index), "product_id").select("user_id", "item", "value")
                 .toArrow())
    _, user_rows = np.unique(table.column("user_id").to_numpy(), return_inverse=True)
    matrix = rows_matrix(user_rows, table.column("item").to_numpy(), table.column("value").to_numpy(),
                         int(user_rows.max(initial=-1)) + 1, len(ids))
    with _timed(f"B for {len(ids)} items from {matrix.nnz} pairs (l2 {params.l2:g})"):
        weights = ease_weights(matrix, params.l2)
    return EaseModel(ids=ids.astype(np.int64), weights=weights), index


def user_recommendations(pairs: DataFrame, purchased: DataFrame, index: DataFrame, model: EaseModel,
                         params: EaseParams) -> DataFrame:
    """``(subject_id, product_ids, scores)``: per user with a modelled item, the ``top_n``
    products by their row of X times B, the ``purchased`` ones left out when
    ``exclude_purchased``."""
    spark = pairs.sparkSession
    modelled = pairs.join(F.broadcast(index), "product_id")
    rows = modelled.groupBy("user_id").agg(F.collect_list("item").alias("items"),
                                           F.collect_list("value").alias("values"))
    if params.exclude_purchased:
        bought = (purchased.join(F.broadcast(index), "product_id").groupBy("user_id")
                  .agg(F.collect_set("item").alias("bought")))
        rows = rows.join(bought, "user_id", "left")
    else:
        rows = rows.withColumn("bought", F.lit(None).cast("array<int>"))
    rows = rows.select("user_id", "items", "values", "bought")
    # Plain arrays: under `python -m jobs.ease` the EaseModel class lives in __main__,
    # which the Python workers cannot unpickle.
    shared = spark.sparkContext.broadcast((model.ids, model.weights))
    k, per_block = params.top_n, max(1, BLOCK_SCORES // len(model.ids))

    def recommend(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids, weights = shared.value
        for batch in batches:
            for start in range(0, batch.num_rows, per_block):
                block = batch.slice(start, per_block)
                matrix = rows_matrix(*_flat(block.column(1)), _flat(block.column(2))[1], len(block), len(ids))
                scores = as_scores(matrix @ weights)
                yield best_of_rows(block.column(0).to_numpy(), scores, _flat(block.column(3)), ids, k)

    return rows.mapInArrow(recommend, LISTS_SCHEMA)


def similar_products(spark: SparkSession, model: EaseModel, params: EaseParams) -> DataFrame:
    """``(subject_id, product_ids, scores)``: per modelled product i, the
    ``similar_top_n`` others j with the largest B[i, j], best first (ties: smaller id)."""
    n = len(model.ids)
    if n < 2:
        return spark.createDataFrame([], LISTS_SCHEMA)
    shared = spark.sparkContext.broadcast((model.ids, model.weights))
    k, per_block = params.similar_top_n, max(1, BLOCK_SCORES // n)

    def similar(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids, weights = shared.value
        for batch in batches:
            rows = batch.column(0).to_numpy()
            for start in range(0, len(rows), per_block):
                block = rows[start:start + per_block]
                self_pairs = (np.arange(len(block)), block)  # the product itself is not its neighbour
                yield best_of_rows(ids[block], as_scores(weights[block]), self_pairs, ids, k)

    parts = max(spark.sparkContext.defaultParallelism, math.ceil(n / 5_000))
    return spark.range(0, n, numPartitions=parts).mapInArrow(similar, LISTS_SCHEMA)


def _flat(lists: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """``(row, value)`` of every element of a list column (null lists have none)."""
    return (pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64),
            pc.list_flatten(lists).to_numpy(zero_copy_only=False))


def ease_candidates(interaction_rows: DataFrame, as_of: datetime, params: EaseParams,
                    product_lists: bool = True, for_users: DataFrame | None = None) -> DataFrame:
    """EASE's user (and, with ``product_lists``, product) lists in the CANDIDATES layout.
    ``for_users`` (``user_id`` rows): user lists for these users only, each the same as in
    a run for everyone (the model learns from every user all the same). Fits here; the
    frame returned is lazy over the fitted model."""
    version = model_version(ALGORITHM, as_of, asdict(params))
    pairs = interaction_pairs(interaction_rows, as_of, params).cache()
    model, index = fit(pairs, params)
    purchased = purchased_pairs(interaction_rows, as_of)
    listed = pairs if for_users is None else pairs.join(for_users, "user_id", "left_semi")
    candidates = as_candidates(user_recommendations(listed, purchased, index, model, params), "user", ALGORITHM,
                               version)
    if product_lists:
        candidates = candidates.unionByName(
            as_candidates(similar_products(pairs.sparkSession, model, params), "product", ALGORITHM, version))
    return candidates


# --- I/O edges --------------------------------------------------------------

def params_from_settings(settings: dict) -> EaseParams:
    return EaseParams(**settings)


def run_ease(spark: SparkSession, paths: DataPaths, as_of: datetime, params: EaseParams) -> dict:
    """Fit EASE and store its candidate lists; return what was written."""
    started = time.monotonic()
    candidates = ease_candidates(read_interactions(spark, paths), as_of, params)
    with _timed("user and similar-product lists, written"):
        counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, candidates)
    summary = {"algorithm": ALGORITHM, "lists": counts, "model_version": model_version(ALGORITHM, as_of, asdict(params)),
               "seconds": round(time.monotonic() - started, 1)}
    log.info("ease done: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_algorithm_job(argv, __doc__.split("\n\n")[0], ALGORITHM, "ease", params_from_settings, run_ease)


if __name__ == "__main__":
    sys.exit(main())
