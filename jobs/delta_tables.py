"""Small Delta Lake helpers: create a table from its schema, read its version,
and make a write idempotent."""
from __future__ import annotations

from contextlib import contextmanager

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from schemas.fields import Table, spark_schema


def ensure_table(spark: SparkSession, path: str, table: Table) -> DeltaTable:
    """The Delta table at ``path``, created empty with ``table``'s schema if absent;
    an existing table gains the nullable columns the definition added since."""
    if DeltaTable.isDeltaTable(spark, path):
        existing = DeltaTable.forPath(spark, path)
        present = set(existing.toDF().columns)
        added = [f for f in spark_schema(table).fields if f.name not in present and f.nullable]
        if added:
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in added)
            spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
        return existing
    empty = spark.createDataFrame([], spark_schema(table))
    writer = empty.write.format("delta").mode("ignore")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.save(path)
    return DeltaTable.forPath(spark, path)


def table_version(spark: SparkSession, path: str) -> int | None:
    """The latest commit version of the Delta table at ``path``, or None if there is none."""
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return DeltaTable.forPath(spark, path).history(1).select("version").first()[0]


@contextmanager
def idempotent_write(spark: SparkSession, app_id: str, version: int):
    """Writes inside this block carry (app_id, version): Delta skips a write whose
    pair it has already committed, so a batch replayed after a crash adds nothing.
    Covers appends and MERGE alike.

    ``spark`` must be the session that runs the write (a DataFrame's ``sparkSession``,
    a DeltaTable's): a streaming query's micro-batches belong to a clone of the session
    that started it, which does not see settings made on the original."""
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")
