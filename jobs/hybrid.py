"""Hybrid: reciprocal-rank fusion of the per-user lists of other algorithms.

For each user, a product's hybrid score is ``sum over algorithms a of
weight_a / (rrf_k + rank_a)``, rank_a counted from 1 in a's list for that user (a
product missing from a list adds nothing). Rank fusion needs no score calibration:
ALS dot products, content cosines and decayed popularity counts live on different
scales, but their ranks compare. Weights come from conf [hybrid.weights] (the
nightly evaluation will tune them); a user covered by one algorithm only still gets
a hybrid list, equal to that algorithm's order.

Reads the candidates table, so it runs after the algorithms it blends.
Run: ``python -m jobs.hybrid --help`` or ``spark-submit jobs/hybrid.py --help``.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates
from jobs.cli import run_algorithm_job
from jobs.paths import DataPaths
from jobs.top_n import best_per_row, by_row, lists_batch, positions_in_runs

log = logging.getLogger(__name__)

ALGORITHM = "hybrid"


@dataclass(frozen=True)
class HybridParams:
    weights: dict[str, float] = field(default_factory=lambda: {"als": 1.0, "content": 0.5, "popular": 0.3})
    rrf_k: int = 60
    top_n: int = 100

    def __post_init__(self):
        if not self.weights or ALGORITHM in self.weights:
            raise ValueError("weights must name the algorithms to blend (not hybrid itself)")
        if not all(w >= 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ValueError("weights must be non-negative, at least one positive")
        if self.rrf_k < 0 or self.top_n < 1:
            raise ValueError("rrf_k must be >= 0 and top_n >= 1")


def fused_user_lists(candidates: DataFrame, params: HybridParams, as_of: datetime) -> DataFrame:
    """Hybrid user lists (CANDIDATES layout) fused from the user lists in ``candidates``.

    Each user's lists are gathered into one row (one shuffle of whole lists, not of
    their items), then fused with NumPy a batch of users at a time (``fuse_lists``):
    exploding the items and grouping them by (user, product) took three shuffles of
    users x algorithms x list length rows, most of the stage's time."""
    blended = {a: float(w) for a, w in params.weights.items() if w > 0}
    user_lists = candidates.where((F.col("subject_kind") == "user") & F.col("algorithm").isin(*blended))
    per_user = (user_lists.groupBy("subject_id")
                .agg(F.collect_list(F.struct("algorithm", "product_ids")).alias("lists")))
    fused = per_user.mapInArrow(partial(_fuse_batches, weights=blended, rrf_k=params.rrf_k, top_n=params.top_n),
                                FUSED_SCHEMA)
    sources = sorted(r[0] for r in user_lists.select("model_version").distinct().collect())
    version = model_version(ALGORITHM, as_of, {"weights": params.weights, "rrf_k": params.rrf_k,
                                               "top_n": params.top_n, "sources": sources})
    return as_candidates(fused, "user", ALGORITHM, version)


FUSED_SCHEMA = "subject_id string, product_ids array<bigint>, scores array<float>"


def fuse_lists(row_of_list: np.ndarray, list_weights: np.ndarray, list_lengths: np.ndarray,
               product_ids: np.ndarray, rows: int, rrf_k: int, top_n: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion of many rows' lists at once.

    List ``j`` belongs to row ``row_of_list[j]``, weighs ``list_weights[j]`` and holds
    ``list_lengths[j]`` consecutive ids of ``product_ids``. Returns, for each row in
    order, its best ``top_n`` products by fused score, ties to the smaller id, as
    ``(lengths, ids, scores)`` (concatenated rows)."""
    position = positions_in_runs(list_lengths)
    item_row = np.repeat(row_of_list, list_lengths)
    contribution = np.repeat(list_weights, list_lengths) / (rrf_k + position + 1.0)
    # Sum the contributions of each (row, product): each row's items sorted by id on
    # their own (a rows x longest-row matrix, as best_per_row does), one sum per run.
    per_row = np.bincount(item_row, minlength=rows)
    width = int(per_row.max(initial=0))
    padded_ids, padded_contribution = by_row(item_row, per_row, width, (product_ids, np.iinfo(np.int64).max),
                                             (contribution, 0.0))
    order = np.argsort(padded_ids, axis=1, kind="stable")
    listed = np.arange(width) < per_row[:, None]  # the padding, the largest id, sorts last
    item_row = np.broadcast_to(np.arange(rows)[:, None], (rows, width))[listed]
    ids = np.take_along_axis(padded_ids, order, axis=1)[listed]
    contribution = np.take_along_axis(padded_contribution, order, axis=1)[listed]
    first = np.flatnonzero(np.r_[True, (item_row[1:] != item_row[:-1]) | (ids[1:] != ids[:-1])])
    row, ids, score = item_row[first], ids[first], np.add.reduceat(contribution, first)
    # Best first within each row, ties to the smaller id; keep each row's first top_n.
    return best_per_row(row, ids, score, rows, top_n)


def _fuse_batches(batches: Iterator[pa.RecordBatch], weights: dict[str, float], rrf_k: int,
                  top_n: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        subjects, lists = batch.column(0), batch.column(1)
        structs = lists.flatten()
        algorithms = structs.field("algorithm").to_pylist()
        id_lists = structs.field("product_ids")
        lengths, ids, scores = fuse_lists(
            row_of_list=np.repeat(np.arange(len(lists)), lists.value_lengths().fill_null(0).to_numpy()),
            list_weights=np.array([weights.get(a, 0.0) for a in algorithms], dtype=np.float64),
            list_lengths=id_lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False),
            product_ids=id_lists.flatten().to_numpy(zero_copy_only=False).astype(np.int64),
            rows=len(lists), rrf_k=rrf_k, top_n=top_n)
        yield lists_batch(subjects, lengths, ids, scores)


def params_from_settings(settings: dict) -> HybridParams:
    return HybridParams(**settings)


def run_hybrid(spark: SparkSession, paths: DataPaths, as_of: datetime, params: HybridParams) -> dict[str, int]:
    """Fuse the stored user lists and store the hybrid ones; return lists written per kind."""
    candidates = spark.read.format("delta").load(paths.table("candidates"))
    present = {r[0] for r in candidates.where(F.col("subject_kind") == "user")
               .select("algorithm").distinct().collect()}
    missing = sorted(set(params.weights) - present)
    if missing:
        log.warning("hybrid: no user lists yet from %s; blending the others", ", ".join(missing))
    # Delta reads one table version and the write replaces only the hybrid partition,
    # which the read leaves out: reading and writing the same table is safe here.
    fused = fused_user_lists(candidates.where(F.col("algorithm") != ALGORITHM), params, as_of)
    counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, fused)
    log.info("hybrid lists written: %s", counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    return run_algorithm_job(argv, __doc__.split("\n\n")[0], ALGORITHM, "hybrid", params_from_settings, run_hybrid)


if __name__ == "__main__":
    sys.exit(main())
