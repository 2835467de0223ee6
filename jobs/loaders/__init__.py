"""Loaders: public interaction logs (Taobao, REES46, MovieLens) into our landing format.

Each loader module holds pure transforms (``to_events(df)``, ``to_products(df)``:
raw DataFrame in, landing DataFrame out) and a thin ``main()``. This package holds
what they share: the landing column types, epoch-to-ISO formatting, and the
write that lands files atomically.

Loaders map and reshape; they do not validate. A row with an unknown event type
or an unparsable field still lands (a bad number becomes null) so that ingest
quarantines it with a reason instead of it vanishing here.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from schemas import Table, spark_schema

log = logging.getLogger(__name__)

LANDING_FORMATS = ("jsonl", "parquet")
_EXTENSIONS = {"jsonl": "jsonl", "parquet": "parquet"}

# Epoch seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: what an ISO date can hold.
_MIN_EPOCH, _MAX_EPOCH = -62_135_596_800, 253_402_300_799


def epoch_seconds_to_iso(col):
    """``yyyy-MM-ddTHH:mm:ssZ`` (UTC) for a column of epoch seconds (number or digit string).

    Plain arithmetic on dates, so the result does not depend on the session time
    zone. Null when the value is not a number or is out of a 4-digit year's range.
    """
    from pyspark.sql import functions as F

    seconds = col.try_cast("long")
    days = F.floor(seconds / 86_400)
    of_day = seconds - days * 86_400
    text = F.format_string(
        "%sT%02d:%02d:%02dZ",
        F.date_add(F.lit("1970-01-01").cast("date"), days.cast("int")).cast("string"),
        F.floor(of_day / 3600).cast("int"), F.floor(of_day % 3600 / 60).cast("int"),
        (of_day % 60).cast("int"),
    )
    return F.when(seconds.between(_MIN_EPOCH, _MAX_EPOCH), text)


def conform(df, table: Table):
    """Exactly ``table``'s columns in order, cast to their landing types; missing ones are null.

    Landing timestamps stay ISO-8601 strings; ingest parses them.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = []
    for field in spark_schema(table).fields:
        data_type = T.StringType() if isinstance(field.dataType, T.TimestampType) else field.dataType
        value = F.col(field.name) if field.name in df.columns else F.lit(None)
        columns.append(value.cast(data_type).alias(field.name))
    return df.select(*columns)


def evaluation_frames(events, products):
    """Landing events and catalog (``to_events``/``to_products`` output) as the frames
    an offline evaluation reads, without going through ingest: interaction rows
    ``(user_id, product_id, event_type, timestamp)`` with parsed timestamps, and the
    catalog ``(product_id, category, price, active, other_features)`` with a missing
    ``active`` taken as true (the evaluation sizes the catalog by it). Rows ingest
    would quarantine for a missing field or an unknown event type are left out.
    For benchmarks and quality tests on logs we know; anything served goes through
    ingest and its quarantine."""
    from pyspark.sql import functions as F

    from schemas.tables import EVENT_TYPES

    rows = events.select("user_id", "product_id", "event_type", F.to_timestamp("timestamp").alias("timestamp"))
    complete = F.col("event_type").isin(*EVENT_TYPES)
    for name in rows.columns:
        complete = complete & F.col(name).isNotNull()
    catalog = products.select("product_id", "category", F.col("price").cast("double"),
                              F.coalesce(F.col("active"), F.lit(True)).alias("active"), "other_features")
    return rows.where(complete), catalog.where(F.col("product_id").isNotNull())


def new_run_id() -> str:
    """A unique, time-ordered tag for the files of one loader run."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def write_landing(df, out_dir: str | Path, table: str, source: str, fmt: str, run_id: str) -> list[Path]:
    """Write ``df`` into ``out_dir/<table>/`` as ``<source>-<table>-<run_id>-NNNNN.<ext>``.

    Spark writes into a hidden folder beside the landing folders; the finished part
    files are then renamed into place one by one, so a streaming reader of
    ``<table>/`` never sees a partial file. Local file systems only (``os.replace``).
    """
    if fmt not in LANDING_FORMATS:
        raise ValueError(f"unknown landing format {fmt!r}; expected one of {LANDING_FORMATS}")
    out = Path(out_dir)
    dest = out / table
    dest.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{source}-{table}-{run_id}.tmp"
    try:
        writer = df.write.mode("overwrite")
        if fmt == "jsonl":
            writer.json(str(tmp))
        else:
            writer.parquet(str(tmp))
        written = []
        for i, part in enumerate(sorted(tmp.glob("part-*"))):
            target = dest / f"{source}-{table}-{run_id}-{i:05d}.{_EXTENSIONS[fmt]}"
            os.replace(part, target)
            written.append(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("landed %d %s file(s) in %s", len(written), table, dest)
    return written


@contextmanager
def loader_session(app_name: str) -> Iterator:
    """The SparkSession for a loader run; stopped at the end only if this run started it."""
    from pyspark.sql import SparkSession

    from jobs.spark_session import get_spark

    owned = SparkSession.getActiveSession() is None
    spark = get_spark(app_name)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every loader takes: --input, --out, --format."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", required=True, type=Path, help="the raw file (or folder) to load")
    parser.add_argument("--out", required=True, type=Path,
                        help="landing zone folder; files go into OUT/events and OUT/products")
    parser.add_argument("--format", dest="fmt", choices=LANDING_FORMATS, default="jsonl",
                        help="landing file format")
    return parser


def configure_logging() -> None:
    from jobs.cli import configure_logging as configure

    configure("INFO")


def run_events_and_catalog_loader(argv, source: str, description: str, read_raw, to_products, to_events) -> int:
    """The ``main()`` of a loader whose one raw file yields both events and a catalog."""
    args = base_parser(f"python -m jobs.loaders.{source}", description).parse_args(argv)
    configure_logging()
    run_id = new_run_id()
    with loader_session(f"load-{source}") as spark:
        raw = read_raw(spark, args.input)
        products = write_landing(to_products(raw), args.out, "products", source, args.fmt, run_id)
        events = write_landing(to_events(raw), args.out, "events", source, args.fmt, run_id)
    print(f"{source} run {run_id}: {len(products)} products file(s), {len(events)} events file(s) under {args.out}")
    return 0


__all__ = [
    "LANDING_FORMATS", "base_parser", "configure_logging", "conform", "epoch_seconds_to_iso",
    "loader_session", "new_run_id", "run_events_and_catalog_loader", "write_landing",
]
