"""Popularity: time-decayed, event-weighted product scores, as candidate lists.

Writes ``algorithm = 'popular'`` rows of the candidates table:

- ``global``   one list (subject ``all``) of the top-N active products;
- ``category`` per category, its top-N active products;
- ``user``     per user, the top products of the user's favourite categories
               (share of the user's own decayed activity), minus what they bought;
- ``segment``  per profile segment (``jobs.segments``: a key over ``segment_features``
               of the profile), its users' top-N active products: the answer for a
               user who has a profile but no activity yet.

It also replaces the ``user_segments`` table (activity and profile segment of every
user), which the snapshot builder packs for the server's cold start and bandit.

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

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from schemas.tables import GLOBAL_SUBJECT, USER_SEGMENTS

from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates, top_n_list, top_n_lists
from jobs.cli import run_algorithm_job
from jobs.delta_tables import ensure_table
from jobs.interactions import check_decay, read_interactions, weighted
from jobs.paths import DataPaths
from jobs.segments import segment_scores, user_segments

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
    # Profile features (other_features keys) whose values make a user's segment; () = no segment lists.
    segment_features: tuple[str, ...] = ()
    segment_min_users: int = 5        # smaller segments get no list (their users fall back to global)
    light_max_interactions: int = 5   # activity segments: must match [evaluation] (the bandit's priors)

    def __post_init__(self):
        if self.top_n < 1 or self.user_top_n < 1 or self.user_top_categories < 1 or self.segment_min_users < 1:
            raise ValueError("top_n, user_top_n, user_top_categories and segment_min_users must be at least 1")
        object.__setattr__(self, "segment_features", tuple(self.segment_features))
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
                          as_of: datetime, params: PopularityParams,
                          segments: DataFrame | None = None, for_users: DataFrame | None = None) -> DataFrame:
    """All popularity candidate lists (global, category, user, and segment when
    ``segments`` (USER_SEGMENTS rows) are given) in the CANDIDATES layout.
    ``for_users`` (``user_id`` rows): user lists for these users only, each the same as in a run for everyone
    (an offline evaluation scores only its held-out users)."""
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
    user_rows = rows if for_users is None else rows.join(for_users, "user_id", "left_semi")
    shares = user_category_shares(user_rows, products, params.user_top_categories)
    user_scored = (shares.join(category_top, "category")
                   .select("user_id", "product_id", (F.col("share") * F.col("relative")).alias("score")))
    if params.exclude_purchased:
        bought = user_rows.where(F.col("event_type") == "purchase").select("user_id", "product_id").distinct()
        user_scored = user_scored.join(bought, ["user_id", "product_id"], "left_anti")
    user_lists = top_n_lists(user_scored, F.col("user_id"), params.user_top_n)

    candidates = (as_candidates(global_lists, "global", ALGORITHM, version)
                  .unionByName(as_candidates(category_lists, "category", ALGORITHM, version))
                  .unionByName(as_candidates(user_lists, "user", ALGORITHM, version)))
    if segments is not None:
        active = products.where(F.col("active")).select("product_id")
        in_segment = segment_scores(rows, segments, params.segment_min_users).join(active, "product_id")
        segment_lists = top_n_lists(in_segment, F.col("profile_segment"), params.top_n)
        candidates = candidates.unionByName(as_candidates(segment_lists, "segment", ALGORITHM, version))
    return candidates


# --- I/O edges --------------------------------------------------------------

def params_from_settings(settings: dict) -> PopularityParams:
    return PopularityParams(**settings)


def run_popularity(spark: SparkSession, paths: DataPaths, as_of: datetime, params: PopularityParams) -> int:
    """Store the user segments, then the popularity candidates; return the number of lists written."""
    products = spark.read.format("delta").load(paths.table("products"))
    rows = read_interactions(spark, paths)
    segments = write_user_segments(spark, paths, rows, as_of, params)
    candidates = popularity_candidates(rows, products, as_of, params,
                                       segments if params.segment_features else None)
    counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, candidates)
    log.info("popularity lists written: %s", counts)
    return sum(counts.values())


def write_user_segments(spark: SparkSession, paths: DataPaths, rows: DataFrame, as_of: datetime,
                        params: PopularityParams) -> DataFrame:
    """Replace the user_segments table (one Delta commit) and return it, read back."""
    path = paths.table("user_segments")
    profiles = None
    if DeltaTable.isDeltaTable(spark, paths.table("profiles")):
        profiles = spark.read.format("delta").load(paths.table("profiles"))
    ensure_table(spark, path, USER_SEGMENTS)
    (user_segments(rows, profiles, as_of, params.segment_features, params.light_max_interactions)
     .write.format("delta").mode("overwrite").save(path))
    stored = spark.read.format("delta").load(path)
    log.info("user segments written: %s", {r["activity"]: r["count"] for r in stored.groupBy("activity").count().collect()})
    return stored


def main(argv: list[str] | None = None) -> int:
    return run_algorithm_job(argv, __doc__.split("\n\n")[0], ALGORITHM, "popularity", params_from_settings, run_popularity)


if __name__ == "__main__":
    sys.exit(main())
