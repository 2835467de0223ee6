"""Popularity: time-decayed, event-weighted product scores, as candidate lists.

Writes ``algorithm = 'popular'`` rows of the candidates table:

- ``global``   one list (subject ``all``) of the top-N active products;
- ``category`` per category, its top-N active products;
- ``user``     per user, the top products of the user's favourite categories
               (share of the user's own decayed activity), minus what they bought.

An event's weight is ``event_weights[type] * 0.5 ** (age_days / half_life_days)``,
age measured back from ``--as-of``; events after ``--as-of`` are ignored, so a run
for a past day sees only what was known then.

Run: ``python -m jobs.popularity --help`` or ``spark-submit jobs/popularity.py --help``.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from schemas.tables import GLOBAL_SUBJECT

from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates, top_n_list, top_n_lists
from jobs.cli import run_algorithm_job
from jobs.interactions import check_decay, read_interactions, weighted
from jobs.paths import DataPaths

log = logging.getLogger(__name__)

ALGORITHM = "popular"


@dataclass(frozen=True)
class PopularityParams:
    top_n: int = 200
    user_top_n: int = 100
    user_top_categories: int = 3
    half_life_days: float = 7.0
    exclude_purchased: bool = True
    event_weights: dict[str, float] = field(default_factory=lambda: {"view": 1.0, "purchase": 8.0})

    def __post_init__(self):
        if self.top_n < 1 or self.user_top_n < 1 or self.user_top_categories < 1:
            raise ValueError("top_n, user_top_n and user_top_categories must be at least 1")
        check_decay(self)


# --- pure transforms --------------------------------------------------------

def product_scores(weighted_rows: DataFrame, products: DataFrame) -> DataFrame:
    """``(product_id, category, score)`` of active products. A product missing from the
    catalog still counts globally (category null): we cannot know it is inactive."""
    scores = weighted_rows.groupBy("product_id").agg(F.sum("weight").alias("score"))
    catalog = products.select("product_id", "category", "active")
    return (scores.join(catalog, "product_id", "left")
            .where(F.coalesce("active", F.lit(True)))
            .select("product_id", "category", "score"))


def user_category_shares(weighted_rows: DataFrame, products: DataFrame, top_categories: int) -> DataFrame:
    """``(user_id, category, share)``: each user's top categories and their share of the
    user's activity among them (shares of a user sum to 1)."""
    affinity = (weighted_rows.join(products.select("product_id", "category"), "product_id")
                .groupBy("user_id", "category").agg(F.sum("weight").alias("affinity")))
    best = Window.partitionBy("user_id").orderBy(F.col("affinity").desc(), F.col("category"))
    top = affinity.withColumn("rank", F.row_number().over(best)).where(F.col("rank") <= top_categories)
    total = Window.partitionBy("user_id")
    return top.select("user_id", "category", (F.col("affinity") / F.sum("affinity").over(total)).alias("share"))


def popularity_candidates(interaction_rows: DataFrame, products: DataFrame,
                          as_of: datetime, params: PopularityParams) -> DataFrame:
    """All popularity candidate lists (global, category, user) in the CANDIDATES layout."""
    version = model_version(ALGORITHM, as_of, asdict(params))
    rows = weighted(interaction_rows, as_of, params)
    scores = product_scores(rows, products)

    global_lists = top_n_list(scores, GLOBAL_SUBJECT, params.top_n)
    in_category = scores.where(F.col("category").isNotNull())
    category_lists = top_n_lists(in_category, F.col("category"), params.top_n)

    # A user's list mixes their categories' best products, each scaled by the
    # category's share of the user's activity and its peak score, so that
    # categories of different sizes compare.
    per_category = Window.partitionBy("category")
    category_top = (in_category
                    .withColumn("rank", F.row_number().over(per_category.orderBy(F.col("score").desc(), "product_id")))
                    .where(F.col("rank") <= params.user_top_n)
                    .withColumn("relative", F.col("score") / F.max("score").over(per_category)))
    shares = user_category_shares(rows, products, params.user_top_categories)
    user_scored = (shares.join(category_top, "category")
                   .select("user_id", "product_id", (F.col("share") * F.col("relative")).alias("score")))
    if params.exclude_purchased:
        bought = rows.where(F.col("event_type") == "purchase").select("user_id", "product_id").distinct()
        user_scored = user_scored.join(bought, ["user_id", "product_id"], "left_anti")
    user_lists = top_n_lists(user_scored, F.col("user_id"), params.user_top_n)

    return (as_candidates(global_lists, "global", ALGORITHM, version)
            .unionByName(as_candidates(category_lists, "category", ALGORITHM, version))
            .unionByName(as_candidates(user_lists, "user", ALGORITHM, version)))


# --- I/O edges --------------------------------------------------------------

def params_from_settings(settings: dict) -> PopularityParams:
    return PopularityParams(**settings)


def run_popularity(spark: SparkSession, paths: DataPaths, as_of: datetime, params: PopularityParams) -> int:
    """Compute and store popularity candidates; return the number of lists written."""
    products = spark.read.format("delta").load(paths.table("products"))
    candidates = popularity_candidates(read_interactions(spark, paths), products, as_of, params)
    counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, candidates)
    log.info("popularity lists written: %s", counts)
    return sum(counts.values())


def main(argv: list[str] | None = None) -> int:
    return run_algorithm_job(argv, __doc__.split("\n\n")[0], ALGORITHM, "popularity", params_from_settings, run_popularity)


if __name__ == "__main__":
    sys.exit(main())
