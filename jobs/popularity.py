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
from functools import partial
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from schemas.tables import GLOBAL_SUBJECT, USER_SEGMENTS

from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates, top_n_list, top_n_lists
from jobs.cli import run_algorithm_job
from jobs.delta_tables import ensure_table
from jobs.interactions import check_decay, read_interactions, read_profiles, weighted
from jobs.paths import DataPaths
from jobs.segments import segment_scores, user_segments
from jobs.top_n import LISTS_SCHEMA, best_per_row, lists_batch

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
    bought = None
    if params.exclude_purchased:
        bought = user_rows.where(F.col("event_type") == "purchase").select("user_id", "product_id").distinct()
    user_lists = favourite_category_lists(shares, category_top, bought, params.user_top_n)

    candidates = (as_candidates(global_lists, "global", ALGORITHM, version)
                  .unionByName(as_candidates(category_lists, "category", ALGORITHM, version))
                  .unionByName(as_candidates(user_lists, "user", ALGORITHM, version)))
    if segments is not None:
        active = products.where(F.col("active")).select("product_id")
        in_segment = segment_scores(rows, segments, params.segment_min_users).join(active, "product_id")
        segment_lists = top_n_lists(in_segment, F.col("profile_segment"), params.top_n)
        candidates = candidates.unionByName(as_candidates(segment_lists, "segment", ALGORITHM, version))
    return candidates




def favourite_category_lists(shares: DataFrame, category_top: DataFrame, bought: DataFrame | None,
                             top_n: int) -> DataFrame:
    """``(subject_id, product_ids, scores)`` per user of ``shares``: the ``top_n`` best of
    the products of ``category_top`` (``category, product_id, relative``) in the user's
    categories, each scoring ``share * relative``, minus the user's ``bought``
    ``(user_id, product_id)`` pairs; ordered as ``top_n_lists``; no row for a user left
    with nothing.

    Collects ``category_top`` to the driver (a Spark job runs here: categories x
    user_top_n rows, small) and broadcasts it; each user's categories and purchases are
    gathered into one row and ranked with NumPy (``rank_favourites``) a batch of users at
    a time. Joining every user to each product of their categories and ranking those
    rows in Spark shuffled users x categories x user_top_n rows (9M at 100k users):
    most of the stage's CPU time.
    """
    spark = shares.sparkSession
    top = category_top.select("category", "product_id", "relative").orderBy("category", "product_id").toPandas()
    categories, starts, counts = np.unique(top["category"].to_numpy(dtype=object), return_index=True,
                                           return_counts=True)
    # Plain containers only: the Python workers unpickle them (see jobs.als).
    shared = spark.sparkContext.broadcast((
        {c: i for i, c in enumerate(categories)}, starts.astype(np.int64), counts.astype(np.int64),
        top["product_id"].to_numpy(np.int64), top["relative"].to_numpy(np.float64)))
    per_user = shares.groupBy("user_id").agg(F.collect_list(F.struct("category", "share")).alias("favourites"))
    if bought is not None:
        per_user = per_user.join(bought.groupBy("user_id").agg(F.collect_list("product_id").alias("bought")),
                                 "user_id", "left")
    else:
        per_user = per_user.withColumn("bought", F.lit(None).cast("array<bigint>"))
    return per_user.mapInArrow(partial(_rank_batches, shared=shared, top_n=top_n), LISTS_SCHEMA)


def rank_favourites(pair_row: np.ndarray, pair_category: np.ndarray, pair_share: np.ndarray,
                    starts: np.ndarray, counts: np.ndarray, ids: np.ndarray, relative: np.ndarray,
                    bought_row: np.ndarray, bought_ids: np.ndarray, rows: int, top_n: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``best_per_row`` of every (row, product of one of its categories) pair.

    Pair ``j`` gives row ``pair_row[j]`` the category at ``starts[c] .. starts[c] +
    counts[c]`` of ``ids``/``relative`` (``c = pair_category[j]``) at share
    ``pair_share[j]``; ``(bought_row, bought_ids)`` pairs are left out. A product has one
    category, so no row meets a product twice."""
    length = counts[pair_category]
    total = int(length.sum())
    item_row = np.repeat(pair_row, length)
    first_of_pair = np.cumsum(length) - length
    position = np.arange(total) - np.repeat(first_of_pair, length) + np.repeat(starts[pair_category], length)
    item_ids, score = ids[position], np.repeat(pair_share, length) * relative[position]
    if len(bought_ids):
        # Product ids fit 32 bits (schemas: PRODUCT_ID), rows fit the rest.
        drop = np.isin((item_row.astype(np.int64) << 32) | item_ids, (bought_row.astype(np.int64) << 32) | bought_ids)
        item_row, item_ids, score = item_row[~drop], item_ids[~drop], score[~drop]
    return best_per_row(item_row, item_ids, score, rows, top_n)


def _rank_batches(batches: Iterator[pa.RecordBatch], shared, top_n: int) -> Iterator[pa.RecordBatch]:
    index, starts, counts, ids, relative = shared.value
    for batch in batches:
        users, favourites, bought = batch.column(0), batch.column(1), batch.column(2)
        pairs = favourites.flatten()
        pair_row = pc.list_parent_indices(favourites).to_numpy(zero_copy_only=False)
        category = np.array([index.get(c, -1) for c in pairs.field("category").to_pylist()], dtype=np.int64)
        known = category >= 0  # a category without an active scored product has no list
        lengths, out_ids, out_scores = rank_favourites(
            pair_row[known], category[known], pairs.field("share").to_numpy(zero_copy_only=False)[known],
            starts, counts, ids, relative,
            pc.list_parent_indices(bought).to_numpy(zero_copy_only=False),
            pc.list_flatten(bought).to_numpy(zero_copy_only=False).astype(np.int64),
            len(users), top_n)
        listed = lengths > 0
        yield lists_batch(pc.cast(users, pa.string()).filter(pa.array(listed)), lengths[listed], out_ids, out_scores)


# --- I/O edges --------------------------------------------------------------

def params_from_settings(settings: dict) -> PopularityParams:
    return PopularityParams(**settings)


def run_popularity(spark: SparkSession, paths: DataPaths, as_of: datetime, params: PopularityParams) -> int:
    """Store the user segments, then the popularity candidates; return the number of lists written."""
    products = spark.read.format("delta").load(paths.table("products"))
    # Read once, kept in memory: the segments and the six aggregations of the lists
    # each scanned the events table again (the stage at 3M events: 144 -> 135 s).
    rows = read_interactions(spark, paths).persist()
    try:
        log.info("interactions read: %d rows", rows.count())
        segments = write_user_segments(spark, paths, rows, as_of, params)
        candidates = popularity_candidates(rows, products, as_of, params,
                                           segments if params.segment_features else None)
        counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, candidates)
    finally:
        rows.unpersist()
    log.info("popularity lists written: %s", counts)
    return sum(counts.values())


def write_user_segments(spark: SparkSession, paths: DataPaths, rows: DataFrame, as_of: datetime,
                        params: PopularityParams) -> DataFrame:
    """Replace the user_segments table (one Delta commit) and return it, read back."""
    path = paths.table("user_segments")
    profiles = read_profiles(spark, paths)
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
