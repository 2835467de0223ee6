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

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates, top_n_lists
from jobs.cli import run_algorithm_job
from jobs.paths import DataPaths

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
    """Hybrid user lists (CANDIDATES layout) fused from the user lists in ``candidates``."""
    weights = F.create_map(*[x for a, w in params.weights.items() for x in (F.lit(a), F.lit(float(w)))])
    blended = {a: w for a, w in params.weights.items() if w > 0}
    user_lists = candidates.where((F.col("subject_kind") == "user") & F.col("algorithm").isin(*blended))
    ranked = user_lists.select("subject_id", "algorithm",
                               F.posexplode("product_ids").alias("position", "product_id"))
    scored = (ranked.withColumn("score", weights[F.col("algorithm")] / (F.lit(params.rrf_k) + F.col("position") + 1))
              .groupBy("subject_id", "product_id").agg(F.sum("score").alias("score")))
    sources = sorted(r[0] for r in user_lists.select("model_version").distinct().collect())
    version = model_version(ALGORITHM, as_of, {"weights": params.weights, "rrf_k": params.rrf_k,
                                               "top_n": params.top_n, "sources": sources})
    return as_candidates(top_n_lists(scored, F.col("subject_id"), params.top_n), "user", ALGORITHM, version)


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
