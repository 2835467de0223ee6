"""REES46 "eCommerce behavior data from multi category store" into landing events and a catalog.

Input: CSV with header
``event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session``,
``event_time`` like ``2019-10-01 00:00:00 UTC``. Event types map ``view`` -> view,
``cart`` -> add_to_cart, ``remove_from_cart`` -> remove_from_cart,
``purchase`` -> purchase; others pass through for ingest to quarantine.

The catalog takes each product's latest row: category = ``category_code`` when
set (a dot path such as ``electronics.smartphone``), else the numeric
``category_id``; its price; other_features ``brand`` and ``category_id``.

    python -m jobs.loaders.rees46 --input 2019-Oct.csv --out var/landing
    spark-submit jobs/loaders/rees46.py --input 2019-Oct.csv --out var/landing
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: spark-submit jobs/loaders/rees46.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs.loaders import (  # noqa: E402
    conform, run_events_and_catalog_loader,
)
from schemas import EVENTS, PRODUCTS  # noqa: E402

SOURCE = "rees46"
RAW_COLUMNS = ("event_time", "event_type", "product_id", "category_id", "category_code", "brand",
               "price", "user_id", "user_session")
RAW_SCHEMA = ", ".join(f"{c} STRING" for c in RAW_COLUMNS)
EVENT_TYPE_MAP = {"view": "view", "cart": "add_to_cart", "remove_from_cart": "remove_from_cart",
                  "purchase": "purchase"}
# "2019-10-01 00:00:00 UTC" -> "2019-10-01T00:00:00Z"; anything else is left as it is.
_EVENT_TIME = r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})( UTC|Z)?$"


def read_raw(spark, path: str | Path):
    """The raw CSV, every column a string so that no malformed row is dropped on read."""
    return spark.read.csv(str(path), schema=RAW_SCHEMA, header=True, mode="PERMISSIVE")


def iso_event_time(col):
    """REES46 ``yyyy-MM-dd HH:mm:ss UTC`` as ISO-8601 ``yyyy-MM-ddTHH:mm:ssZ`` (text only, no time zone math)."""
    from pyspark.sql import functions as F

    return F.regexp_replace(F.trim(col), _EVENT_TIME, "$1T$2Z")


def to_events(df):
    """Raw rows -> landing events, one for one."""
    from pyspark.sql import functions as F

    mapping = F.create_map(*[F.lit(x) for pair in EVENT_TYPE_MAP.items() for x in pair])
    event_type = F.col("event_type")
    return conform(df.select(
        F.col("user_id").try_cast("long").alias("user_id"),
        F.coalesce(mapping[F.trim(event_type)], event_type).alias("event_type"),
        F.col("product_id").try_cast("long").alias("product_id"),
        iso_event_time(F.col("event_time")).alias("timestamp"),
    ), EVENTS)


def to_products(df):
    """Raw rows -> one catalog row per product, from its latest row."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def blank_to_null(name: str):
        return F.nullif(F.trim(F.col(name)), F.lit(""))

    # Ties on event_time are broken by the other columns so that reruns agree.
    latest = Window.partitionBy("product_id").orderBy(
        F.col("event_time").desc(), F.col("price").desc_nulls_last(),
        F.col("category_code").desc_nulls_last(), F.col("brand").desc_nulls_last(),
        F.col("category_id").desc_nulls_last())
    rows = (df.withColumn("product_id", F.col("product_id").try_cast("long"))
            .withColumn("_rank", F.row_number().over(latest))
            .where(F.col("_rank") == 1))
    features = F.create_map(F.lit("brand"), blank_to_null("brand"),
                            F.lit("category_id"), blank_to_null("category_id"))
    return conform(rows.select(
        "product_id",
        F.coalesce(blank_to_null("category_code"), blank_to_null("category_id")).alias("category"),
        F.col("price").try_cast("double").alias("price"),
        F.map_filter(features, lambda _k, v: v.isNotNull()).alias("other_features"),
    ), PRODUCTS)


def main(argv: list[str] | None = None) -> int:
    return run_events_and_catalog_loader(
        argv, SOURCE, "Load a REES46 e-commerce events CSV into the landing zone (events and products).",
        read_raw, to_products, to_events)


if __name__ == "__main__":
    sys.exit(main())
