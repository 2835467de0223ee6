"""User segments: who a user is before their own lists say it.

Two labels per user, written to the ``user_segments`` table and packed into the
snapshot's ``users`` database:

- **activity**: ``new`` / ``light`` / ``heavy`` by interactions up to the run's
  as-of. It is the offline evaluation's rule (``jobs.evaluation`` uses
  ``activity_segment`` too), so the server's bandit seeds each segment's priors
  with the evaluation's scores for that same segment.
- **profile segment**: a key over configured profile features, such as
  ``country=DE|age_band=25-34``. Popularity ranks products per key, so a user
  with a profile but no activity gets what people like them engage with, before
  the global list.
"""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.tables import USER_SEGMENTS

MISSING = "?"  # a profile without one of the features: still a segment of its own


def activity_segment(interactions: Column, light_max: int) -> Column:
    """``new`` for no interactions, ``light`` for at most ``light_max``, else ``heavy``."""
    return F.when(interactions == 0, "new").when(interactions <= light_max, "light").otherwise("heavy")


def profile_segment_keys(profiles: DataFrame, features: Sequence[str]) -> DataFrame:
    """``(user_id, profile_segment)`` for every profile: ``name=value`` per feature,
    in the configured order, joined by ``|``."""
    if not features:
        raise ValueError("profile_segment_keys needs at least one feature")
    parts = [F.concat(F.lit(f"{name}="), F.coalesce(F.col("other_features")[name], F.lit(MISSING)))
             for name in features]
    return profiles.select("user_id", F.concat_ws("|", *parts).alias("profile_segment"))


def user_segments(interaction_rows: DataFrame, profiles: DataFrame | None, as_of: datetime,
                  features: Sequence[str], light_max: int) -> DataFrame:
    """``USER_SEGMENTS`` rows for every user with an interaction up to ``as_of`` or a
    profile; the profile segment is null without a profile or without features."""
    counts = (interaction_rows.where(F.col("timestamp") <= F.lit(as_of))
              .groupBy("user_id").agg(F.count("*").alias("interactions")))
    if profiles is not None and features:
        users = counts.join(profile_segment_keys(profiles, features), "user_id", "full_outer")
    else:
        users = counts.withColumn("profile_segment", F.lit(None).cast("string"))
    n = F.coalesce(F.col("interactions"), F.lit(0))
    return users.select("user_id", activity_segment(n, light_max).alias("activity"),
                        "profile_segment").select(*USER_SEGMENTS.names)


def segment_scores(weighted_rows: DataFrame, segments: DataFrame, min_users: int) -> DataFrame:
    """``(profile_segment, product_id, score)``: the decayed weight each segment's users
    gave each product, for segments where at least ``min_users`` users were active
    (fewer would mostly echo one person's history)."""
    rows = weighted_rows.join(segments.where(F.col("profile_segment").isNotNull())
                              .select("user_id", "profile_segment"), "user_id")
    large = (rows.groupBy("profile_segment").agg(F.countDistinct("user_id").alias("users"))
             .where(F.col("users") >= min_users).select("profile_segment"))
    return (rows.join(large, "profile_segment")
            .groupBy("profile_segment", "product_id").agg(F.sum("weight").alias("score")))
