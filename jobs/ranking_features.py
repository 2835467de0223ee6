"""Features of (user, candidate product) pairs for the ranking stage (jobs.ranked), and
their graded labels. Pure DataFrame transforms; every feature is a number, null when
unknown (LightGBM learns where missing values go).

Per pair:

- each generator's score and rank (1 = its first) in the user's list, null when the
  generator did not list the product, and how many generators listed it;
- the product: decayed popularity, its share of its category's popularity, trend (the
  share of that popularity from the last ``trend_days``), age in days since its first
  event, price and price band;
- the user: events, purchases, distinct products, days since their last event;
- the user and the product together: the user's share of activity in the product's
  category and in its price band, and days since the user last touched that category;
- categorical: configured ``other_features`` keys of the user's profile (``user_<key>``)
  and of the product (``product_<key>``), as codes of a vocabulary fixed at training.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.interactions import weighted

SECONDS_PER_DAY = 86_400.0
NUMERIC_FEATURES = (
    "generators", "popularity", "category_share", "trend", "age_days", "price", "price_band",
    "user_events", "user_purchases", "user_products", "user_idle_days",
    "category_affinity", "price_band_affinity", "category_idle_days",
)


@dataclass(frozen=True)
class FeatureSpec:
    """What the features are made of: the same at training and at scoring."""
    generators: tuple[str, ...]
    depth: int                           # each generator's first products per user
    event_weights: Mapping[str, float]
    half_life_days: float
    trend_days: float
    profile_features: tuple[str, ...] = ()
    product_features: tuple[str, ...] = ()

    @property
    def categorical(self) -> tuple[str, ...]:
        return (tuple(f"user_{k}" for k in self.profile_features)
                + tuple(f"product_{k}" for k in self.product_features))

    @property
    def names(self) -> tuple[str, ...]:
        """Every feature, in the model's column order."""
        per_generator = tuple(f"{g}_{part}" for g in self.generators for part in ("score", "rank"))
        return per_generator + NUMERIC_FEATURES + self.categorical


def candidate_pairs(candidates: DataFrame, spec: FeatureSpec) -> DataFrame:
    """``(user_id, product_id, <g>_score, <g>_rank for each generator g, generators)``:
    the union of each user's lists from the generators, ``depth`` deep each, hash
    partitioned on ``user_id`` (the user-side features join there without a shuffle)."""
    lists = candidates.where((F.col("subject_kind") == "user") & F.col("algorithm").isin(*spec.generators))
    items = F.zip_with(F.slice("product_ids", 1, spec.depth), F.slice("scores", 1, spec.depth),
                       lambda p, s: F.struct(p.alias("product_id"), s.alias("score")))
    exploded = lists.select(F.col("subject_id").cast("long").alias("user_id"), "algorithm",
                            F.posexplode(items).alias("position", "item"))
    # One column per generator before the aggregation: plain max/min, no countDistinct
    # (which doubles the rows it shuffles).
    mine = {g: F.col("algorithm") == g for g in spec.generators}
    spread = exploded.select(
        "user_id", F.col("item.product_id").alias("product_id"),
        *[F.when(mine[g], F.col("item.score")).alias(f"{g}_score") for g in spec.generators],
        *[F.when(mine[g], F.col("position") + 1).alias(f"{g}_rank") for g in spec.generators])
    per_generator = [F.max(f"{g}_score").cast("double").alias(f"{g}_score") for g in spec.generators]
    per_generator += [F.min(f"{g}_rank").cast("double").alias(f"{g}_rank") for g in spec.generators]
    listed_by = sum(F.col(f"{g}_rank").isNotNull().cast("double") for g in spec.generators)
    return (spread.repartition("user_id").groupBy("user_id", "product_id").agg(*per_generator)
            .withColumn("generators", listed_by))


def _days_since(as_of: datetime, timestamp: Column) -> Column:
    return (F.lit(as_of).cast("timestamp").cast("double") - timestamp.cast("double")) / SECONDS_PER_DAY


def _price_band(price: Column) -> Column:
    """Powers of two of the price: 0-1, 1-3, 3-7, ... (null without a price)."""
    return F.floor(F.log2(price + F.lit(1.0))).cast("double")


def product_features(rows: DataFrame, products: DataFrame, as_of: datetime, spec: FeatureSpec) -> DataFrame:
    """``(product_id, category, popularity, category_share, trend, age_days, price, price_band,
    product_<key>...)`` for every product in the catalog or in ``rows``."""
    seen = rows.where(F.col("timestamp") <= F.lit(as_of))
    decayed = weighted(seen, as_of, spec)
    recent = F.col("timestamp") >= F.lit(as_of - timedelta(days=spec.trend_days))
    popularity = decayed.groupBy("product_id").agg(F.sum("weight").alias("popularity"),
                                                  F.sum(F.when(recent, F.col("weight"))).alias("_recent"))
    first_seen = seen.groupBy("product_id").agg(F.min("timestamp").alias("_first"))
    catalog = products.select("product_id", "category", F.col("price").cast("double").alias("price"),
                              *[F.col("other_features")[k].alias(f"product_{k}") for k in spec.product_features])
    joined = catalog.join(popularity, "product_id", "full").join(first_seen, "product_id", "left")
    category_total = F.sum("popularity").over(Window.partitionBy("category"))
    return joined.select(
        "product_id", "category", "popularity",
        F.when(F.col("category").isNotNull(), F.col("popularity") / category_total).alias("category_share"),
        (F.coalesce(F.col("_recent"), F.lit(0.0)) / F.col("popularity")).alias("trend"),
        _days_since(as_of, F.col("_first")).alias("age_days"),
        "price", _price_band(F.col("price")).alias("price_band"),
        *[f"product_{k}" for k in spec.product_features])


def user_features(rows: DataFrame, products: DataFrame, profiles: DataFrame | None, as_of: datetime,
                  spec: FeatureSpec) -> DataFrame:
    """One row per user: ``(user_id, user_events, user_purchases, user_products,
    user_idle_days, user_<key>..., _categories, _bands)``, the last two maps from the
    user's categories to ``(affinity, idle_days)`` and price bands to affinity (one
    frame, so the pairs join it once)."""
    seen = rows.where(F.col("timestamp") <= F.lit(as_of))
    activity = seen.groupBy("user_id").agg(
        F.count("*").cast("double").alias("user_events"),
        F.sum((F.col("event_type") == "purchase").cast("double")).alias("user_purchases"),
        F.countDistinct("product_id").cast("double").alias("user_products"),
        _days_since(as_of, F.max("timestamp")).alias("user_idle_days"))
    if spec.profile_features:
        keys = [F.col("other_features")[k].alias(f"user_{k}") for k in spec.profile_features]
        profile_keys = (profiles.select("user_id", *keys) if profiles is not None
                        else activity.select("user_id", *[F.lit(None).cast("string").alias(f"user_{k}")
                                                          for k in spec.profile_features]))
        activity = activity.join(profile_keys, "user_id", "left")
    decayed = weighted(seen, as_of, spec).join(
        products.select("product_id", "category", _price_band(F.col("price").cast("double")).alias("price_band")),
        "product_id")
    total = F.sum("weight").over(Window.partitionBy("user_id"))
    by_category = (decayed.where(F.col("category").isNotNull()).groupBy("user_id", "category")
                   .agg(F.sum("weight").alias("weight"), F.max("timestamp").alias("_last"))
                   .select("user_id", "category", F.struct((F.col("weight") / total).alias("affinity"),
                                                           _days_since(as_of, F.col("_last")).alias("idle"))
                           .alias("_seen"))
                   .groupBy("user_id").agg(F.map_from_entries(F.collect_list(F.struct("category", "_seen")))
                                           .alias("_categories")))
    by_band = (decayed.where(F.col("price_band").isNotNull())
               .groupBy("user_id", "price_band").agg(F.sum("weight").alias("weight"))
               .select("user_id", "price_band", (F.col("weight") / total).alias("affinity"))
               .groupBy("user_id").agg(F.map_from_entries(F.collect_list(F.struct("price_band", "affinity")))
                                       .alias("_bands")))
    return activity.join(by_category, "user_id", "left").join(by_band, "user_id", "left")


def pair_features(pairs: DataFrame, rows: DataFrame, products: DataFrame, profiles: DataFrame | None,
                  as_of: datetime, spec: FeatureSpec) -> DataFrame:
    """``pairs`` (from ``candidate_pairs``) with every feature of ``spec.names``, the
    categorical ones still as their raw strings (``encode_categorical`` turns them into codes)."""
    # The catalog's features are small beside the pairs: broadcast, the pairs stay put.
    items = F.broadcast(product_features(rows, products, as_of, spec))
    users = user_features(rows, products, profiles, as_of, spec)
    seen_category = F.col("_categories")[F.col("category")]
    joined = (pairs.join(items, "product_id", "left").join(users, "user_id", "left")
              .withColumn("category_affinity", seen_category["affinity"])
              .withColumn("category_idle_days", seen_category["idle"])
              .withColumn("price_band_affinity", F.col("_bands")[F.col("price_band")]))
    return joined.select("user_id", "product_id", *spec.names)


def category_vocabularies(features: DataFrame, spec: FeatureSpec, max_values: int) -> dict[str, list[str]]:
    """Each categorical feature's ``max_values`` most frequent values (ties by value): the
    codes are positions in these lists, fixed with the model."""
    vocabularies = {}
    for name in spec.categorical:
        counts = (features.where(F.col(name).isNotNull()).groupBy(name).count()
                  .orderBy(F.col("count").desc(), F.col(name)).limit(max_values).collect())
        vocabularies[name] = [r[name] for r in counts]
    return vocabularies


def encode_categorical(features: DataFrame, vocabularies: Mapping[str, Sequence[str]]) -> DataFrame:
    """Categorical columns as ``double`` codes of their vocabulary; a value outside it is null."""
    for name, values in vocabularies.items():
        if values:
            codes = F.create_map(*[x for i, v in enumerate(values) for x in (F.lit(v), F.lit(float(i)))])
            features = features.withColumn(name, codes[F.col(name)])
        else:
            features = features.withColumn(name, F.lit(None).cast("double"))
    return features


def graded_labels(rows: DataFrame, grades: Mapping[str, float], start: datetime | None = None,
                  end: datetime | None = None) -> DataFrame:
    """``(user_id, product_id, label)``: the best grade of each pair's events (in ``[start,
    end)`` when given)."""
    grade = F.create_map(*[x for k, v in grades.items() for x in (F.lit(k), F.lit(float(v)))])
    if start is not None:
        rows = rows.where(F.col("timestamp") >= F.lit(start))
    if end is not None:
        rows = rows.where(F.col("timestamp") < F.lit(end))
    return (rows.withColumn("grade", grade[F.col("event_type")]).where(F.col("grade") > 0)
            .groupBy("user_id", "product_id").agg(F.max("grade").alias("label")))
