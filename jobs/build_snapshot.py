"""Build an LMDB snapshot from the candidates, products and user_segments tables, then publish it.

Records are packed on the executors (``mapInPandas``) into the binary layout of
``schemas.snapshot`` and streamed to the driver one partition at a time
(``toLocalIterator``), so driver memory stays bounded whatever the user count.
Each table is read at one pinned Delta version, recorded in the manifest;
``user_segments`` is optional (a pipeline that never ran popularity has none).

Run: ``python -m jobs.build_snapshot --help`` or ``spark-submit jobs/build_snapshot.py --help``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.settings import load_conf
from schemas.snapshot import (
    MAX_ITEMS, PRODUCTS_DB, USERS_DB, Manifest, pack_product, pack_ranked_list, pack_user, product_key,
    recs_db_name, subject_key, user_key,
)

from jobs.candidates import params_digest
from jobs.cli import configure_logging, job_parser, resolve_as_of
from jobs.delta_tables import table_version
from jobs.paths import DataPaths
from jobs.snapshot_writer import SnapshotWriter, new_version, publish, remove_abandoned_builds
from jobs.spark_session import get_spark

log = logging.getLogger(__name__)

RECORD_SCHEMA = "db string, key binary, value binary"
PROGRESS_EVERY = 250_000


# --- pure transforms (run on executors) -------------------------------------

def _pack_candidates(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        dbs, keys, values = [], [], []
        for kind, subject, algorithm, ids, scores in zip(
                batch["subject_kind"], batch["subject_id"], batch["algorithm"],
                batch["product_ids"], batch["scores"]):
            dbs.append(recs_db_name(kind, algorithm))
            keys.append(subject_key(kind, subject))
            values.append(pack_ranked_list(ids[:MAX_ITEMS], scores[:MAX_ITEMS]))
        yield pd.DataFrame({"db": dbs, "key": keys, "value": values})


def _pack_products(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        keys = [product_key(int(p)) for p in batch["product_id"]]
        values = [pack_product(c, None if pd.isna(p) else float(p), bool(a))
                  for c, p, a in zip(batch["category"], batch["price"], batch["active"])]
        yield pd.DataFrame({"db": PRODUCTS_DB, "key": keys, "value": values})


def _pack_users(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        keys = [user_key(int(u)) for u in batch["user_id"]]
        values = [pack_user(a, None if pd.isna(s) else s) for a, s in zip(batch["activity"], batch["profile_segment"])]
        yield pd.DataFrame({"db": USERS_DB, "key": keys, "value": values})


def snapshot_records(candidates: DataFrame, products: DataFrame, users: DataFrame | None = None) -> DataFrame:
    """``(db, key, value)`` binary records for every list, every product and, when
    ``users`` (USER_SEGMENTS rows) are given, every user."""
    lists = candidates.select("subject_kind", "subject_id", "algorithm", "product_ids", "scores")
    catalog = products.select("product_id", "category", "price", "active")
    records = (lists.mapInPandas(_pack_candidates, RECORD_SCHEMA)
               .unionByName(catalog.mapInPandas(_pack_products, RECORD_SCHEMA)))
    if users is not None:
        records = records.unionByName(
            users.select("user_id", "activity", "profile_segment").mapInPandas(_pack_users, RECORD_SCHEMA))
    return records


# --- I/O edges --------------------------------------------------------------

def _pinned(spark: SparkSession, path: str) -> tuple[DataFrame, int]:
    version = table_version(spark, path)
    if version is None:
        raise FileNotFoundError(f"no Delta table at {path}: run ingest and an algorithm job first")
    return spark.read.format("delta").option("versionAsOf", version).load(path), version


def build_snapshot(spark: SparkSession, paths: DataPaths, as_of: datetime, settings: dict,
                   version: str | None = None, do_publish: bool = True) -> Manifest:
    """Write ``snapshots/<version>/`` and, if ``do_publish``, point CURRENT at it."""
    started = time.monotonic()
    candidates, candidates_version = _pinned(spark, paths.table("candidates"))
    products, products_version = _pinned(spark, paths.table("products"))
    delta_versions = {"candidates": candidates_version, "products": products_version}
    users = None
    if table_version(spark, paths.table("user_segments")) is not None:
        users, delta_versions["user_segments"] = _pinned(spark, paths.table("user_segments"))
    model_versions = {r["algorithm"]: r["model_version"] for r in
                      candidates.groupBy("algorithm").agg(F.max("model_version").alias("model_version")).collect()}
    version = version or new_version()
    root = paths.snapshots
    root.mkdir(parents=True, exist_ok=True)
    for leftover in remove_abandoned_builds(root):
        log.warning("removed abandoned build folder %s", leftover)

    manifest = Manifest(
        version=version, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        as_of=as_of.isoformat(), delta_versions=delta_versions,
        model_versions=model_versions,
        config_digest=params_digest(settings),
    )
    map_size = int(settings["map_size_gb"] * (1 << 30))
    written = 0
    with SnapshotWriter(root, version, map_size) as writer:
        for row in snapshot_records(candidates, products, users).toLocalIterator(prefetchPartitions=True):
            writer.put(row["db"], bytes(row["key"]), bytes(row["value"]))
            written += 1
            if written % PROGRESS_EVERY == 0:
                log.info("snapshot %s: %d records written (%.0f s)", version, written, time.monotonic() - started)
        final = writer.finish(manifest)
    log.info("snapshot %s built in %s: %d records, %.1f MB, %.1f s", version, final, written,
             manifest.files["data.mdb"]["bytes"] / 1e6, time.monotonic() - started)
    if do_publish:
        publish(root, version, settings["keep_versions"])
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="snapshot version name (default: creation time, UTC)")
    parser.add_argument("--no-publish", action="store_true", help="build but leave CURRENT alone")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = DataPaths.from_settings(settings, args.data_dir)
    spark = get_spark("recsys-build-snapshot")
    manifest = build_snapshot(spark, paths, resolve_as_of(args.as_of), settings["snapshot"],
                              args.version, do_publish=not args.no_publish)
    print(json.dumps({"version": manifest.version, "databases": manifest.databases,
                      "published": not args.no_publish}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
