"""Build an LMDB snapshot from the candidates, products and user_segments tables, then publish it.

Spark pins each table at its latest Delta version (recorded in the manifest) and
names that version's files; pyarrow reads them on the driver, one database's
partition at a time, and ``jobs.snapshot_packing`` packs the records with NumPy
in key order, which the writer appends to LMDB. Reading Parquet straight into
Arrow skips the JVM's row-to-Arrow conversion of every list element, which took
most of the build before. Memory is bounded by ``[snapshot] read_budget_mb``: a
partition larger than that decoded is read in key ranges, in several passes.
``user_segments`` is optional (a pipeline that never ran popularity has none).
With a data dir on an object store, the snapshot is built in a local temporary
folder (LMDB needs a local file) and uploaded, CURRENT last.

Run: ``python -m jobs.build_snapshot --help`` or ``spark-submit jobs/build_snapshot.py --help``.
"""
from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pyarrow.compute as pc
from pyspark.sql import SparkSession

from schemas.settings import load_conf
from schemas.snapshot import POLICY_FILE, PRODUCTS_DB, USERS_DB, Manifest, recs_db_name

from jobs.candidates import params_digest
from jobs.cli import configure_logging, data_paths, job_parser, resolve_as_of
from jobs.delta_files import PinnedTable, column_array, pin, read_columns, read_in_ranges
from jobs.paths import DataPaths
from jobs.publish_snapshot import ObjectStoreTarget
from jobs.snapshot_packing import Records, numeric_subject_keys, product_records, ranked_list_records, user_records
from jobs.snapshot_writer import SnapshotWriter, new_version, publish, remove_abandoned_builds
from jobs.spark_session import get_spark

log = logging.getLogger(__name__)

LIST_COLUMNS = ["subject_id", "product_ids", "scores"]
DEFAULT_READ_BUDGET_MB = 2048


# --- records per database (Arrow in, sorted records out) ------------------------

def candidate_databases(candidates: PinnedTable, budget_bytes: int) -> Iterator[tuple[str, Records]]:
    """``(database, records)`` for every ``(algorithm, subject_kind)`` partition."""
    for partition in candidates.partitions:
        values = dict(partition)
        kind, db = values["subject_kind"], recs_db_name(values["subject_kind"], values["algorithm"])
        uris = candidates.files[partition]
        for table in read_in_ranges(uris, LIST_COLUMNS, "subject_id",
                                    lambda ids, kind=kind: numeric_subject_keys(kind, ids), budget_bytes):
            for records in ranked_list_records(kind, *(column_array(table, c) for c in LIST_COLUMNS)):
                yield db, records


def model_versions(candidates: PinnedTable) -> dict[str, str]:
    """Each algorithm's newest model version, from the ``model_version`` column of its files."""
    versions: dict[str, str] = {}
    for partition, uris in candidates.files.items():
        algorithm = dict(partition)["algorithm"]
        newest = pc.max(column_array(read_columns(uris, ["model_version"]), "model_version")).as_py()
        if newest is not None and newest > versions.get(algorithm, ""):
            versions[algorithm] = newest
    return dict(sorted(versions.items()))


def product_databases(products: PinnedTable) -> Iterator[tuple[str, Records]]:
    uris = products.files_where()
    if not uris:
        return
    table = read_columns(uris, ["product_id", "category", "price", "active"])
    for records in product_records(*(column_array(table, c) for c in table.column_names)):
        yield PRODUCTS_DB, records


def user_databases(users: PinnedTable) -> Iterator[tuple[str, Records]]:
    uris = users.files_where()
    if not uris:
        return
    table = read_columns(uris, ["user_id", "activity", "profile_segment"])
    for records in user_records(*(column_array(table, c) for c in table.column_names)):
        yield USERS_DB, records


# --- the build -------------------------------------------------------------------

def _pinned(spark: SparkSession, path: str) -> PinnedTable:
    table = pin(spark, path)
    if table is None:
        raise FileNotFoundError(f"no Delta table at {path}: run ingest and an algorithm job first")
    return table


def build_snapshot(spark: SparkSession, paths: DataPaths, as_of: datetime, settings: dict,
                   version: str | None = None, do_publish: bool = True) -> Manifest:
    """Write ``snapshots/<version>/`` and, if ``do_publish``, point CURRENT at it."""
    started = time.monotonic()
    candidates = _pinned(spark, paths.table("candidates"))
    products = _pinned(spark, paths.table("products"))
    users = pin(spark, paths.table("user_segments"))
    delta_versions = {"candidates": candidates.version, "products": products.version}
    if users is not None:
        delta_versions["user_segments"] = users.version
    version = version or new_version()
    manifest = Manifest(
        version=version, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        as_of=as_of.isoformat(), delta_versions=delta_versions,
        model_versions=model_versions(candidates),
        config_digest=params_digest(settings),
    )
    budget = int(settings.get("read_budget_mb", DEFAULT_READ_BUDGET_MB)) << 20
    databases = [candidate_databases(candidates, budget), product_databases(products)]
    if users is not None:
        databases.append(user_databases(users))
    extras = {POLICY_FILE: paths.policy.read_bytes()} if paths.policy.exists() else {}
    if paths.snapshots.is_local:
        root = paths.snapshots.local_path
        write_snapshot(root, manifest, databases, settings, started, extras)
        if do_publish:
            publish(root, version, settings["keep_versions"])
        return manifest
    # LMDB writes a local file: build here, then upload to the data dir's snapshots
    # folder the way publish_snapshot ships to an object store (files, manifest, CURRENT).
    with tempfile.TemporaryDirectory(prefix="recsys-build-") as tmp:
        write_snapshot(Path(tmp), manifest, databases, settings, started, extras)
        target = ObjectStoreTarget(paths.snapshots)
        target.upload(Path(tmp) / version, version)
    if do_publish:
        target.point_current_at(version)
        target.prune(settings["keep_versions"])
    log.info("snapshot %s uploaded to %s", version, paths.snapshots / version)
    return manifest


def write_snapshot(root: Path, manifest: Manifest, databases: list, settings: dict, started: float,
                   extra_files: dict[str, bytes]) -> Path:
    """The LMDB snapshot ``root/<manifest.version>/`` from ``databases``' sorted records, with ``extra_files``."""
    root.mkdir(parents=True, exist_ok=True)
    for leftover in remove_abandoned_builds(root):
        log.warning("removed abandoned build folder %s", leftover)
    version, written = manifest.version, 0
    with SnapshotWriter(root, version, int(settings["map_size_gb"] * (1 << 30))) as writer:
        for source in databases:
            for db, records in source:
                writer.append_sorted(db, records.keys, records.values)
                written += len(records)
                if written % 500_000 < len(records):
                    log.info("snapshot %s: %d records written (%.0f s)", version, written, time.monotonic() - started)
        final = writer.finish(manifest, extra_files)
    log.info("snapshot %s built in %s: %d records, %.1f MB, %.1f s", version, final, written,
             manifest.files["data.mdb"]["bytes"] / 1e6, time.monotonic() - started)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="snapshot version name (default: creation time, UTC)")
    parser.add_argument("--no-publish", action="store_true", help="build but leave CURRENT alone")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = data_paths(settings, args.data_dir)
    spark = get_spark("recsys-build-snapshot")
    manifest = build_snapshot(spark, paths, resolve_as_of(args.as_of), settings["snapshot"],
                              args.version, do_publish=not args.no_publish)
    print(json.dumps({"version": manifest.version, "databases": manifest.databases,
                      "published": not args.no_publish}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
