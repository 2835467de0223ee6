"""Ingest: landing files -> validated Delta tables, every refused row quarantined.

- events   are appended to ``lake/events`` (partitioned by event_date), duplicates
           removed: a repeat within a batch or of an already stored event is
           quarantined with reason "duplicate event ...".
- products are MERGEd into ``lake/products`` by product_id (``active: false`` marks
           a product inactive; a missing ``active`` means true). A deactivation
           may carry only ``{product_id, active: false}``: it flips the flag of a
           stored product and keeps the rest; of an unknown product it stores
           nothing (accepted, there is nothing to deactivate).
- profiles are MERGEd into ``lake/profiles``; their histories are then rebuilt as
           rows of ``lake/profile_interactions``.
- refused rows go to ``lake/<table>_rejected`` with the raw row and the reason.

Exactly once: each landing format is read by a Structured Streaming file source
with ``availableNow`` and a checkpoint, so a file is processed once; every write
in a micro-batch carries (stream id, batch id) as a Delta transaction id, so a
batch replayed after a crash is skipped by Delta instead of written twice.

For every table, received = accepted + rejected; the job logs and returns the counts.

Run: ``python -m jobs.ingest --help`` or ``spark-submit jobs/ingest.py --help``.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from schemas.fields import spark_schema
from schemas.settings import load_conf
from schemas.tables import (
    EVENTS, EVENTS_STORED, INGEST_LOG, PRODUCTS, PRODUCTS_STORED, PROFILE_INTERACTIONS, PROFILES,
    PROFILES_STORED, REJECTED,
)

from jobs.cli import configure_logging, data_paths, job_parser, resolve_as_of
from jobs.delta_tables import ensure_table, idempotent_write
from jobs.landing import FORMATS, has_files, read_stream
from jobs.paths import DataPaths
from jobs.spark_session import get_spark
from jobs.validation import SOURCE_FILE, judge, rejected_rows, split_judged

log = logging.getLogger(__name__)

TABLES = {t.name: t for t in (EVENTS, PRODUCTS, PROFILES)}
STORED = {"events": EVENTS_STORED, "products": PRODUCTS_STORED, "profiles": PROFILES_STORED}
_ORDER = "_order"
# Duplicates of one batch joined back to its rows by broadcast up to this many (~40
# bytes each); past it (a whole file landed twice, say) by a shuffle.
MAX_BROADCAST_DUPLICATES = 1_000_000


class AccountingError(RuntimeError):
    """received != accepted + rejected: a row was lost or counted twice."""


@dataclass
class IngestCounts:
    received: int = 0
    accepted: int = 0
    rejected: int = 0

    def add(self, received: int, accepted: int, rejected: int) -> None:
        if received != accepted + rejected:
            raise AccountingError(f"received {received} != accepted {accepted} + rejected {rejected}")
        self.received += received
        self.accepted += accepted
        self.rejected += rejected


# --- pure transforms --------------------------------------------------------

def events_to_store(valid: DataFrame, ingest_batch: str) -> DataFrame:
    """Valid events with their partition column and the batch that writes them."""
    return (valid.withColumn("event_date", F.date_format("timestamp", "yyyy-MM-dd"))
            .withColumn("ingest_batch", F.lit(ingest_batch)))


def duplicate_reasons(events: DataFrame, stored: DataFrame) -> DataFrame:
    """``(_order, _reason)`` of the rows of ``events`` that are duplicates: all but the
    first of each key in this batch, and any whose key ``stored`` has already.

    ``stored`` must leave out rows written by this same batch (``ingest_batch``), so
    that a replay after a crash, or a lazy re-evaluation after the write, marks alike.
    Only the key columns and each row's place are ranked, not whole rows (the raw text
    is most of a row): at 10M events the shuffle for the ranking went from 554 to 256 MB
    and its sort from 45 to 16 s, and no cache of every marked row is built any more.
    """
    key = list(EVENTS.key)
    join_on = key + ["event_date"]
    places = events.select(*join_on, SOURCE_FILE, _ORDER).withColumn(
        "_nth", F.row_number().over(Window.partitionBy(*key).orderBy(SOURCE_FILE, _ORDER)))
    stored_keys = stored.select(*join_on).distinct().withColumn("_stored", F.lit(True))
    reason = (F.when(F.col("_nth") > 1, F.lit("duplicate event (repeated in this batch)"))
              .when(F.col("_stored"), F.lit("duplicate event (already ingested)")))
    return (places.join(stored_keys, on=join_on, how="left")
            .select(_ORDER, reason.alias("_reason")).where(F.col("_reason").isNotNull()))


def mark_duplicate_events(events: DataFrame, reasons: DataFrame, broadcast: bool) -> DataFrame:
    """``events`` with ``_reason`` from ``duplicate_reasons`` (null: a new event).
    ``broadcast`` the reasons when they are few, as they usually are: ``events`` is then
    not shuffled for the join."""
    return events.join(F.broadcast(reasons) if broadcast else reasons, on=_ORDER, how="left")


def products_to_store(valid: DataFrame, as_of: datetime) -> DataFrame:
    """One row per product: the latest ``changed_at`` wins, rows without one after
    those with one, then the last received; ``active`` defaults to true."""
    last = Window.partitionBy("product_id").orderBy(
        F.col("changed_at").desc_nulls_last(), F.col(SOURCE_FILE).desc(), F.col(_ORDER).desc())
    return (valid.withColumn("_nth", F.row_number().over(last)).where("_nth = 1")
            .select("product_id", "category", "price",
                    F.coalesce("active", F.lit(True)).alias("active"),
                    "other_features", "changed_at", F.lit(as_of).cast("timestamp").alias("updated_at")))


def profiles_to_store(valid: DataFrame, as_of: datetime) -> DataFrame:
    """One row per user, the last one received winning."""
    last = Window.partitionBy("user_id").orderBy(F.col(SOURCE_FILE).desc(), F.col(_ORDER).desc())
    return (valid.withColumn("_nth", F.row_number().over(last)).where("_nth = 1")
            .select(*PROFILES.names, F.lit(as_of).cast("timestamp").alias("updated_at")))


def profile_interactions(profiles: DataFrame) -> DataFrame:
    """Profile histories as interaction rows stamped with the profile's updated_at."""
    def explode(column: str, event_type: str) -> DataFrame:
        return profiles.select(
            "user_id", F.explode(F.array_distinct(F.coalesce(column, F.array().cast("array<bigint>"))))
            .alias("product_id"), F.lit(event_type).alias("event_type"), F.col("updated_at").alias("timestamp"))
    return explode("purchase_history", "purchase").unionByName(explode("view_history", "view")) \
        .select(*PROFILE_INTERACTIONS.names)


# --- I/O edges --------------------------------------------------------------

class TableIngest:
    """Runs every landing-format stream of one table and keeps its counts."""

    def __init__(self, spark: SparkSession, paths: DataPaths, table_name: str, as_of: datetime,
                 settings: dict):
        self.spark = spark
        self.paths = paths
        self.table = TABLES[table_name]
        self.stored_path = paths.table(table_name)
        self.rejected_path = paths.table(f"{table_name}_rejected")
        self.as_of = as_of
        self.settings = settings
        self.counts = IngestCounts()
        self.log_path = paths.table("ingest_log")
        ensure_table(spark, self.stored_path, STORED[table_name])
        ensure_table(spark, self.rejected_path, REJECTED)
        ensure_table(spark, self.log_path, INGEST_LOG)

    def run(self) -> IngestCounts:
        folder = self.paths.landing_for(self.table.name)
        for fmt in FORMATS:
            if not has_files(folder, fmt):
                continue
            stream_id = f"ingest-{self.table.name}-{fmt}"
            stream = read_stream(self.spark, folder, self.table, fmt,
                                 self.settings["max_files_per_trigger"], self.settings["max_line_bytes"])
            query = (stream.writeStream.queryName(stream_id.replace("-", "_"))
                     .option("checkpointLocation", str(self.paths.checkpoints / stream_id))
                     .trigger(availableNow=True)
                     .foreachBatch(lambda batch, batch_id, sid=stream_id: self._batch(batch, batch_id, sid))
                     .start())
            query.awaitTermination()
        return self.counts

    def _already_logged(self, stream_id: str, batch_id: int) -> bool:
        logged = self.spark.read.format("delta").load(self.log_path)
        return logged.where((F.col("stream_id") == stream_id) & (F.col("batch_id") == batch_id)).limit(1).count() > 0

    def _batch(self, batch: DataFrame, batch_id: int, stream_id: str) -> None:
        if self._already_logged(stream_id, batch_id):
            # Finished before a crash that hit ahead of the checkpoint commit: nothing to redo.
            log.info("%s batch %d already ingested; skipping", stream_id, batch_id)
            return
        # Judged once and kept: the valid and the rejected rows both come from it, and
        # _order (arrival order within a file: among rows for the same key, the last
        # wins) must not change between the two.
        judged = (judge(batch, self.table, self.as_of)
                  .withColumn(_ORDER, F.monotonically_increasing_id()).persist())
        try:
            received = judged.count()
            if received == 0:
                return
            valid, rejected = split_judged(judged, self.as_of)
            if self.table.name == "events":
                accepted, rejected_count = self._write_events(valid, rejected, batch_id, stream_id)
            else:
                accepted = self._merge_latest(valid, batch_id, stream_id)
                rejected_count = self._append(rejected, self.rejected_path, batch_id, stream_id)
            self.counts.add(received, accepted, rejected_count)
            self._log_batch(stream_id, batch_id, received, accepted, rejected_count)
            log.info("%s batch %d: received %d, accepted %d, rejected %d",
                     stream_id, batch_id, received, accepted, rejected_count)
        finally:
            judged.unpersist()

    def _log_batch(self, stream_id: str, batch_id: int, received: int, accepted: int, rejected: int) -> None:
        row = self.spark.createDataFrame(
            [(stream_id, batch_id, self.as_of, received, accepted, rejected)], spark_schema(INGEST_LOG))
        with idempotent_write(self.spark, stream_id, batch_id):
            row.write.format("delta").mode("append").save(self.log_path)

    def _append(self, df: DataFrame, path: str, batch_id: int, stream_id: str) -> int:
        df = df.persist()
        count = df.count()
        if count:
            # The batch's own session: foreachBatch hands over DataFrames of a clone of
            # self.spark, and a write reads the transaction id from its DataFrame's session.
            with idempotent_write(df.sparkSession, stream_id, batch_id):
                df.write.format("delta").mode("append").save(path)
        df.unpersist()
        return count

    def _write_events(self, valid: DataFrame, rejected: DataFrame, batch_id: int,
                      stream_id: str) -> tuple[int, int]:
        """Append the new events and quarantine the rest; return (accepted, rejected) counts."""
        ingest_batch = f"{stream_id}:{batch_id}"
        events = events_to_store(valid, ingest_batch)
        dates = [r[0] for r in events.select("event_date").distinct().collect()]
        stored = (self.spark.read.format("delta").load(self.stored_path)
                  .where(F.col("event_date").isin(dates) & (F.col("ingest_batch") != ingest_batch)))
        reasons = duplicate_reasons(events, stored).persist()
        few = reasons.count() <= MAX_BROADCAST_DUPLICATES
        marked = mark_duplicate_events(events, reasons, broadcast=few)
        if not few:  # a shuffled join is worth keeping; a broadcast one is cheaper to redo than to cache
            marked = marked.persist()
        try:
            # Quarantine first: a write to the events table drops every cached plan that
            # reads it (Spark re-caches by path after a write), the reasons included, and
            # the duplicates would then be ranked all over again (~50 s at 10M events).
            duplicates = rejected_rows(marked.where(F.col("_reason").isNotNull()), self.as_of)
            rejected_count = self._append(rejected.unionByName(duplicates), self.rejected_path, batch_id, stream_id)
            new = marked.where(F.col("_reason").isNull()).select(*EVENTS_STORED.names)
            return self._append_partitioned(new, batch_id, stream_id), rejected_count
        finally:
            marked.unpersist()
            reasons.unpersist()

    def _append_partitioned(self, df: DataFrame, batch_id: int, stream_id: str) -> int:
        df = df.persist()
        count = df.count()
        if count:
            with idempotent_write(df.sparkSession, stream_id, batch_id):  # see _append
                df.write.format("delta").mode("append").partitionBy("event_date").save(self.stored_path)
        df.unpersist()
        return count

    def _merge_latest(self, valid: DataFrame, batch_id: int, stream_id: str) -> int:
        accepted = valid.count()
        to_store = (products_to_store if self.table.name == "products" else profiles_to_store)(valid, self.as_of)
        key = self.table.key[0]
        merge = (DeltaTable.forPath(self.spark, self.stored_path).alias("t")
                 .merge(to_store.alias("s"), f"t.{key} = s.{key}"))
        if self.table.name == "products":
            # A change older than the stored one is stale (collector workers' files can
            # reach ingest out of order). A deactivation ({product_id, active: false},
            # no category) changes the flag only, and of a product we know: there is
            # nothing to insert.
            fresh = "(s.changed_at IS NULL OR t.changed_at IS NULL OR s.changed_at >= t.changed_at)"
            merge = (merge.whenMatchedUpdate(f"s.category IS NULL AND {fresh}",
                                             {"active": "s.active", "updated_at": "s.updated_at",
                                              "changed_at": "coalesce(s.changed_at, t.changed_at)"})
                     .whenMatchedUpdateAll(fresh).whenNotMatchedInsertAll("s.category IS NOT NULL"))
        else:
            merge = merge.whenMatchedUpdateAll().whenNotMatchedInsertAll()
        with idempotent_write(self.spark, stream_id, batch_id):
            merge.execute()
        return accepted


def rebuild_profile_interactions(spark: SparkSession, paths: DataPaths) -> None:
    profiles = spark.read.format("delta").load(paths.table("profiles"))
    (profile_interactions(profiles).write.format("delta").mode("overwrite")
     .option("overwriteSchema", True).save(paths.table("profile_interactions")))


def run_ingest(spark: SparkSession, paths: DataPaths, as_of: datetime, settings: dict,
               tables: list[str] | None = None) -> dict[str, IngestCounts]:
    """Ingest every table's new landing files; return counts per table."""
    results = {}
    for name in tables or list(TABLES):
        results[name] = TableIngest(spark, paths, name, as_of, settings).run()
        log.info("%s: received %d, accepted %d, rejected %d", name, results[name].received,
                 results[name].accepted, results[name].rejected)
    if "profiles" in results and (results["profiles"].accepted or
                                  not DeltaTable.isDeltaTable(spark, paths.table("profile_interactions"))):
        rebuild_profile_interactions(spark, paths)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES),
                        help="which landing folders to ingest")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = data_paths(settings, args.data_dir)
    spark = get_spark("recsys-ingest")
    results = run_ingest(spark, paths, resolve_as_of(args.as_of), settings["ingest"], args.tables)
    print(json.dumps({name: asdict(c) for name, c in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
