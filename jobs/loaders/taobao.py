"""Taobao UserBehavior (Tianchi data set 649) into landing events and a catalog.

Input: CSV without header, ``user_id,item_id,category_id,behavior_type,timestamp``
(Unix seconds). Behaviours map ``pv`` -> view, ``cart`` -> add_to_cart,
``fav`` -> wishlist, ``buy`` -> purchase; any other value passes through unchanged,
for ingest to quarantine. The catalog is each distinct item with its category id
as the category; the log carries no price.

    python -m jobs.loaders.taobao --input UserBehavior.csv --out var/landing
    spark-submit jobs/loaders/taobao.py --input UserBehavior.csv --out var/landing
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: spark-submit jobs/loaders/taobao.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs.loaders import (  # noqa: E402
    conform, epoch_seconds_to_iso, run_events_and_catalog_loader,
)
from schemas import EVENTS, PRODUCTS  # noqa: E402

SOURCE = "taobao"
RAW_SCHEMA = "user_id STRING, item_id STRING, category_id STRING, behavior_type STRING, timestamp STRING"
BEHAVIOUR_TO_EVENT = {"pv": "view", "cart": "add_to_cart", "fav": "wishlist", "buy": "purchase"}


def read_raw(spark, path: str | Path):
    """The raw log, every column a string so that no malformed row is dropped on read."""
    return spark.read.csv(str(path), schema=RAW_SCHEMA, header=False, mode="PERMISSIVE")


def to_events(df):
    """Raw rows -> landing events, one for one."""
    from pyspark.sql import functions as F

    mapping = F.create_map(*[F.lit(x) for pair in BEHAVIOUR_TO_EVENT.items() for x in pair])
    behaviour = F.col("behavior_type")
    return conform(df.select(
        F.col("user_id").try_cast("long").alias("user_id"),
        F.coalesce(mapping[F.trim(behaviour)], behaviour).alias("event_type"),
        F.col("item_id").try_cast("long").alias("product_id"),
        epoch_seconds_to_iso(F.trim(F.col("timestamp"))).alias("timestamp"),
    ), EVENTS)


def to_products(df):
    """Raw rows -> one catalog row per item: category = its category id; price unknown."""
    from pyspark.sql import functions as F

    return conform(
        df.groupBy(F.col("item_id").try_cast("long").alias("product_id"))
        .agg(F.max(F.trim(F.col("category_id"))).alias("category")),
        PRODUCTS,
    )


def main(argv: list[str] | None = None) -> int:
    return run_events_and_catalog_loader(
        argv, SOURCE, "Load a Taobao UserBehavior CSV into the landing zone (events and products).",
        read_raw, to_products, to_events)


if __name__ == "__main__":
    sys.exit(main())
