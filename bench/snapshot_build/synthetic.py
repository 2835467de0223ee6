"""A synthetic lake of the production shape for the snapshot builder, written by Spark
itself (no Python rows): ``candidates`` (one user list per user and algorithm),
``products`` and ``user_segments``, in the schemas of ``schemas/tables.py``.

Lists: user ``u`` of algorithm ``a`` gets ``items`` distinct product ids
``(start + j * stride) mod products`` for ``j = 0 .. items-1``, with ``start`` and
``stride`` (1 .. products // items, so no id repeats) hashed from ``(u, a)``: as
hard to compress as real ids. Scores fall linearly from a hashed top score.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import numpy as np
import pyarrow as pa

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas import CANDIDATES, PRODUCTS_STORED, spark_schema
from schemas.tables import USER_SEGMENTS

from jobs.delta_tables import ensure_table
from jobs.paths import DataPaths

ALGORITHMS = ("als", "content", "popular", "hybrid")
PROFILE_SEGMENTS = tuple(f"country={c}|age_band={a}" for c in ("DE", "FR", "PL", "?")
                         for a in ("18-24", "25-34", "35-54", "55+"))
ARROW_TYPES = (pa.string(), pa.string(), pa.string(), pa.list_(pa.int64()), pa.list_(pa.float32()),
               pa.string())
MARKER = "synthetic.json"  # what the lake holds: a rerun with the same shape reuses it


@dataclass(frozen=True)
class LakeShape:
    users: int
    products: int
    items: int
    algorithms: int

    @property
    def names(self) -> tuple[str, ...]:
        return ALGORITHMS[:self.algorithms]


def _conform(frame: DataFrame, table) -> DataFrame:
    have = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    # Cast only what differs: a cast to an array type with non-null elements fails.
    return frame.select(*[F.col(f.name) if have[f.name] == f.dataType.simpleString()
                          else F.col(f.name).cast(f.dataType).alias(f.name)
                          for f in spark_schema(table).fields])


def _mix(values: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of ``values + salt``: a cheap, well-spread hash (uint64 arithmetic wraps)."""
    z = values.astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def candidates_frame(spark: SparkSession, shape: LakeShape, algorithm: str, partitions: int) -> DataFrame:
    """One list per user for ``algorithm``, built per Arrow batch with NumPy (Spark's
    higher-order functions take minutes over 100M elements on 2 cores)."""
    salt = 1 + ALGORITHMS.index(algorithm) if algorithm in ALGORITHMS else len(algorithm)
    items, n_products = shape.items, shape.products
    stride_max = max(1, n_products // items)
    schema = spark_schema(CANDIDATES)
    version = f"{algorithm}-bench"

    def lists(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        positions = np.arange(items, dtype=np.int64)
        for batch in batches:
            users = batch.column(0).to_numpy()
            n = len(users)
            start = (_mix(users, 3 * salt) % np.uint64(n_products)).astype(np.int64)
            stride = (_mix(users, 3 * salt + 1) % np.uint64(stride_max)).astype(np.int64) + 1
            top = ((_mix(users, 3 * salt + 2) % np.uint64(1000)).astype(np.float32) + 1) / 1000
            ids = (start[:, None] + positions[None, :] * stride[:, None]) % n_products
            scores = (top[:, None] * (1 - positions[None, :] / items)).astype(np.float32)
            offsets = pa.array(np.arange(0, (n + 1) * items, items, dtype=np.int32))
            yield pa.RecordBatch.from_arrays([
                pa.array(np.full(n, "user", dtype=object), pa.string()),
                pa.array(users).cast(pa.string()),
                pa.array(np.full(n, algorithm, dtype=object), pa.string()),
                pa.ListArray.from_arrays(offsets, pa.array(ids.ravel())),
                pa.ListArray.from_arrays(offsets, pa.array(scores.ravel())),
                pa.array(np.full(n, version, dtype=object), pa.string()),
            ], schema=pa.schema([pa.field(f.name, t) for f, t in zip(schema.fields, ARROW_TYPES)]))

    ddl = "subject_kind string, subject_id string, algorithm string, product_ids array<bigint>, " \
          "scores array<float>, model_version string"
    return spark.range(0, shape.users, numPartitions=partitions).mapInArrow(lists, ddl)


def products_frame(spark: SparkSession, shape: LakeShape, as_of: datetime) -> DataFrame:
    ids = spark.range(0, shape.products, numPartitions=2).withColumnRenamed("id", "product_id")
    return _conform(ids.select(
        "product_id",
        F.format_string("c%d.s%d", F.col("product_id") % 20, F.col("product_id") % 400).alias("category"),
        ((F.col("product_id") % 1000) + 0.99).alias("price"),
        (F.col("product_id") % 50 != 0).alias("active"),
        F.lit(None).alias("other_features"),
        F.lit(None).alias("changed_at"),
        F.lit(as_of).alias("updated_at"),
    ), PRODUCTS_STORED)


def user_segments_frame(spark: SparkSession, shape: LakeShape, partitions: int) -> DataFrame:
    ids = spark.range(0, shape.users, numPartitions=partitions).withColumnRenamed("id", "user_id")
    segment = F.element_at(F.array(*[F.lit(s) for s in PROFILE_SEGMENTS]),
                           (F.pmod(F.xxhash64("user_id"), F.lit(len(PROFILE_SEGMENTS))) + 1).cast("int"))
    return _conform(ids.select(
        "user_id",
        F.when(F.col("user_id") % 10 < 3, "light").otherwise("heavy").alias("activity"),
        F.when(F.col("user_id") % 4 == 0, F.lit(None)).otherwise(segment).alias("profile_segment"),
    ), USER_SEGMENTS)


def write_lake(spark: SparkSession, paths: DataPaths, shape: LakeShape, as_of: datetime,
               partitions: int) -> list[str]:
    """Make the lake under ``paths`` hold exactly ``shape``: reuse what a lake of the
    same users, products and list length holds, append the missing algorithms'
    lists, delete the extra ones (a partition delete, no rewrite). Returns the
    algorithms written."""
    marker = paths.root.local_path / MARKER
    base = {"users": shape.users, "products": shape.products, "items": shape.items}
    held: list[str] = []
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if {k: stored.get(k) for k in base} == base:
            held = stored["algorithms"]
    if not held:
        shutil.rmtree(paths.root.local_path, ignore_errors=True)
        paths.root.local_path.mkdir(parents=True)
        ensure_table(spark, paths.table("products"), PRODUCTS_STORED)
        products_frame(spark, shape, as_of).write.format("delta").mode("append").save(paths.table("products"))
        ensure_table(spark, paths.table("user_segments"), USER_SEGMENTS)
        (user_segments_frame(spark, shape, partitions)
         .write.format("delta").mode("append").save(paths.table("user_segments")))
        ensure_table(spark, paths.table("candidates"), CANDIDATES)
    extra = [a for a in held if a not in shape.names]
    if extra:
        DeltaTable.forPath(spark, paths.table("candidates")).delete(F.col("algorithm").isin(extra))
    written = [a for a in shape.names if a not in held]
    for algorithm in written:
        (candidates_frame(spark, shape, algorithm, partitions)
         .write.format("delta").mode("append").save(paths.table("candidates")))
    marker.write_text(json.dumps({**base, "algorithms": list(shape.names)}))
    return written


def lake_bytes(paths: DataPaths) -> int:
    return sum(p.stat().st_size for p in paths.lake.local_path.rglob("*.parquet"))
