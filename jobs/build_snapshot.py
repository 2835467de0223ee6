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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.fields import UINT32_MAX
from schemas.settings import load_conf
from schemas.snapshot import (
    LAYOUT_VERSION, MAX_ITEMS, PRODUCTS_DB, USERS_DB, Manifest, pack_product, pack_ranked_list, pack_user,
    product_key, recs_db_name, subject_key, user_key,
)

from jobs.candidates import params_digest
from jobs.cli import configure_logging, job_parser, resolve_as_of
from jobs.delta_tables import table_version
from jobs.paths import DataPaths
from jobs.snapshot_writer import SnapshotWriter, new_version, publish, remove_abandoned_builds
from jobs.spark_session import get_spark

log = logging.getLogger(__name__)

# One row per chunk of records of one database, not per record: the driver then
# receives a few thousand large rows instead of millions of small ones (a Row per
# record cost more than packing and LMDB together). ``*_ends`` are uint32
# little-endian end offsets of each key / value in the blob beside them.
CHUNK_SCHEMA = "db string, key_ends binary, keys binary, value_ends binary, values binary"
PROGRESS_EVERY = 250_000
_U32 = np.dtype("<u4")


# --- pure transforms (run on executors) -------------------------------------

def _chunk(db: str, keys: list[bytes], values: list[bytes]) -> dict:
    key_ends = np.cumsum([len(k) for k in keys], dtype=np.int64)
    value_ends = np.cumsum([len(v) for v in values], dtype=np.int64)
    return {"db": db, "key_ends": key_ends.astype(_U32).tobytes(), "keys": b"".join(keys),
            "value_ends": value_ends.astype(_U32).tobytes(), "values": b"".join(values)}


def unchunk(chunk) -> Iterator[tuple[bytes, bytes]]:
    """The ``(key, value)`` records of one chunk row, in order."""
    keys, values = bytes(chunk["keys"]), bytes(chunk["values"])
    key_start = value_start = 0
    for key_end, value_end in zip(np.frombuffer(chunk["key_ends"], _U32).tolist(),
                                  np.frombuffer(chunk["value_ends"], _U32).tolist()):
        yield keys[key_start:key_end], values[value_start:value_end]
        key_start, value_start = key_end, value_end


def _pack_lists_python(kinds, subjects, algorithms, id_lists, score_lists) -> Iterator[dict]:
    """Record by record with ``pack_ranked_list``: any list the vectorised path does
    not take (nulls, overlong, out-of-range ids), and the errors it raises."""
    by_db: dict[str, tuple[list, list]] = {}
    for kind, subject, algorithm, ids, scores in zip(kinds, subjects, algorithms, id_lists, score_lists):
        keys, values = by_db.setdefault(recs_db_name(kind, algorithm), ([], []))
        keys.append(subject_key(kind, subject))
        values.append(pack_ranked_list(ids[:MAX_ITEMS], scores[:MAX_ITEMS]))
    for db, (keys, values) in by_db.items():
        yield _chunk(db, keys, values)


def _pack_lists_vectorised(db: str, kind: str, subjects: pa.Array, id_lists: pa.ListArray,
                           score_lists: pa.ListArray) -> dict | None:
    """One chunk of ranked-list records built with NumPy (``schemas.snapshot`` layout:
    every record is whole 32-bit words, header, ids, scores), or None when a list
    needs the record-by-record path."""
    lengths = id_lists.value_lengths().to_numpy(zero_copy_only=False)
    ids, scores = id_lists.flatten(), score_lists.flatten()
    if (id_lists.null_count or score_lists.null_count or ids.null_count or scores.null_count
            or not np.array_equal(lengths, score_lists.value_lengths().to_numpy(zero_copy_only=False))
            or (len(lengths) and lengths.max() > MAX_ITEMS)):
        return None
    ids = ids.to_numpy(zero_copy_only=False)
    if len(ids) and (ids.min() < 0 or ids.max() > UINT32_MAX):
        return None
    key_len = {"user": 8, "product": 4}.get(kind)
    if key_len is None:
        return None
    try:
        numeric = pc.cast(subjects, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # not a decimal id: let the record path raise
        return None
    if len(numeric) and (numeric.min() < 0 or (key_len == 4 and numeric.max() > UINT32_MAX)):
        return None
    order = np.argsort(numeric, kind="stable")  # inserted in key order, LMDB appends and fills its pages
    keys = numeric[order].astype(">u8" if key_len == 8 else ">u4").tobytes()
    lengths = lengths.astype(np.int64)
    source_starts = (np.cumsum(lengths) - lengths)[order]  # where each sorted row's items are in `ids`
    lengths = lengths[order]
    total = int(lengths.sum())
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # item's rank in its list
    gather = np.repeat(source_starts, lengths) + within
    record_starts = np.concatenate([[0], np.cumsum(1 + 2 * lengths)])  # in 32-bit words
    out = np.empty(record_starts[-1], _U32)
    out[record_starts[:-1]] = LAYOUT_VERSION | (lengths << 16)  # uint8 layout, uint8 flags 0, uint16 n
    id_words = np.repeat(record_starts[:-1] + 1, lengths) + within
    out[id_words] = ids[gather].astype(_U32)
    out[id_words + np.repeat(lengths, lengths)] = (
        scores.to_numpy(zero_copy_only=False).astype("<f4")[gather].view(_U32))
    n = len(lengths)
    return {"db": db, "key_ends": (np.arange(1, n + 1, dtype=np.int64) * key_len).astype(_U32).tobytes(),
            "keys": keys, "value_ends": (record_starts[1:] * 4).astype(_U32).tobytes(), "values": out.tobytes()}


def _pack_candidates(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.num_rows == 0:
            continue
        kinds, subjects, algorithms, id_lists, score_lists = (batch.column(i) for i in range(5))
        groups = pa.table({"kind": kinds, "algorithm": algorithms}).group_by(
            ["kind", "algorithm"], use_threads=False).aggregate([])
        chunks = []
        for kind, algorithm in zip(groups.column("kind").to_pylist(), groups.column("algorithm").to_pylist()):
            if len(groups) == 1:
                rows = batch
            else:
                rows = batch.filter(pc.and_(pc.equal(kinds, kind), pc.equal(algorithms, algorithm)))
            chunk = _pack_lists_vectorised(recs_db_name(kind, algorithm), kind, rows.column(1),
                                           rows.column(3), rows.column(4))
            if chunk is None:
                chunks.extend(_pack_lists_python(*(rows.column(i).to_pylist() for i in range(5))))
            else:
                chunks.append(chunk)
        yield pa.RecordBatch.from_pylist(chunks, schema=_CHUNK_ARROW)


_CHUNK_ARROW = pa.schema([("db", pa.string()), ("key_ends", pa.binary()), ("keys", pa.binary()),
                          ("value_ends", pa.binary()), ("values", pa.binary())])


def _pack_products(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        keys = [product_key(int(p)) for p in batch["product_id"]]
        values = [pack_product(c, None if pd.isna(p) else float(p), bool(a))
                  for c, p, a in zip(batch["category"], batch["price"], batch["active"])]
        yield pd.DataFrame([_chunk(PRODUCTS_DB, keys, values)])


def _pack_users(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        keys = [user_key(int(u)) for u in batch["user_id"]]
        values = [pack_user(a, None if pd.isna(s) else s) for a, s in zip(batch["activity"], batch["profile_segment"])]
        yield pd.DataFrame([_chunk(USERS_DB, keys, values)])


def snapshot_records(candidates: DataFrame, products: DataFrame, users: DataFrame | None = None) -> DataFrame:
    """Chunks of ``(db, key, value)`` binary records (CHUNK_SCHEMA; ``unchunk`` reads
    one) for every list, every product and, when ``users`` (USER_SEGMENTS rows) are
    given, every user."""
    lists = candidates.select("subject_kind", "subject_id", "algorithm", "product_ids", "scores")
    catalog = products.select("product_id", "category", "price", "active")
    records = (lists.mapInArrow(_pack_candidates, CHUNK_SCHEMA)
               .unionByName(catalog.mapInPandas(_pack_products, CHUNK_SCHEMA)))
    if users is not None:
        records = records.unionByName(
            users.select("user_id", "activity", "profile_segment").mapInPandas(_pack_users, CHUNK_SCHEMA))
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
        reported = 0
        for chunk in snapshot_records(candidates, products, users).toLocalIterator(prefetchPartitions=True):
            db = chunk["db"]
            for key, value in unchunk(chunk):
                writer.put(db, key, value)
                written += 1
            if written - reported >= PROGRESS_EVERY:
                reported = written
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
