"""Interactions: events and profile histories as one frame, weighted by event type
and age. Popularity sums these weights; ALS uses them as implicit confidence."""
from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Mapping, Protocol

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.tables import EVENT_TYPES

from jobs.paths import DataPaths

log = logging.getLogger(__name__)


class DecayParams(Protocol):
    event_weights: Mapping[str, float]
    half_life_days: float


def check_decay(params: DecayParams) -> None:
    """Raise ValueError unless the weights name known event types with finite
    non-negative values and the half-life is positive (each job's params call this)."""
    if not params.half_life_days > 0:  # also refuses NaN
        raise ValueError("half_life_days must be positive")
    unknown = sorted(set(params.event_weights) - set(EVENT_TYPES))
    if unknown:  # a misspelt type would otherwise weigh 0 without a word
        raise ValueError(f"event_weights: unknown event types {unknown}; expected some of {list(EVENT_TYPES)}")
    if not all(w >= 0 and math.isfinite(w) for w in params.event_weights.values()):
        raise ValueError("event_weights must be finite non-negative numbers")


def interactions(events: DataFrame, profile_interactions: DataFrame | None) -> DataFrame:
    """Events and profile-history rows as one ``(user_id, product_id, event_type, timestamp)`` frame."""
    columns = ["user_id", "product_id", "event_type", "timestamp"]
    rows = events.select(*columns)
    if profile_interactions is not None:
        rows = rows.unionByName(profile_interactions.select(*columns))
    return rows


def weighted(rows: DataFrame, as_of: datetime, params: DecayParams) -> DataFrame:
    """Rows up to ``as_of`` with a ``weight`` column; zero-weight event types dropped."""
    weights = F.create_map(*[x for k, v in params.event_weights.items() for x in (F.lit(k), F.lit(float(v)))])
    age_days = (F.lit(as_of).cast("timestamp").cast("double") - F.col("timestamp").cast("double")) / 86_400.0
    return (rows.where(F.col("timestamp") <= F.lit(as_of))
            .withColumn("weight", F.coalesce(weights[F.col("event_type")], F.lit(0.0))
                        * F.pow(F.lit(0.5), age_days / params.half_life_days))
            .where(F.col("weight") > 0))


def purchased_pairs(rows: DataFrame, as_of: datetime) -> DataFrame:
    """``(user_id, product_id)`` of every purchase up to ``as_of``, whatever its weight:
    a product bought is bought (what ``exclude_purchased`` leaves out)."""
    return (rows.where((F.col("event_type") == "purchase") & (F.col("timestamp") <= F.lit(as_of)))
            .select("user_id", "product_id"))


def read_profiles(spark: SparkSession, paths: DataPaths) -> DataFrame | None:
    """The profiles table, or None when no profile was ever ingested."""
    if DeltaTable.isDeltaTable(spark, paths.table("profiles")):
        return spark.read.format("delta").load(paths.table("profiles"))
    return None


def read_interactions(spark: SparkSession, paths: DataPaths) -> DataFrame:
    """Stored events plus profile-history rows (when profiles were ever ingested)."""
    read = spark.read.format("delta").load
    profile_rows = None
    if DeltaTable.isDeltaTable(spark, paths.table("profile_interactions")):
        profile_rows = read(paths.table("profile_interactions"))
    else:
        log.info("no profile_interactions table yet; using events only")
    return interactions(read(paths.table("events")), profile_rows)
