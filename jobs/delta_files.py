"""The Parquet files of one pinned Delta table version, read with pyarrow.

Spark resolves the version from the Delta log (``inputFiles``); pyarrow then
reads the files on the driver, column by column, without the JVM's row-to-Arrow
conversion that made the snapshot build slow. This is correct only for tables
whose files hold exactly the version's rows under their own column names, so
tables with deletion vectors or column mapping are refused with a clear error.
Partition values come from the Hive-style folders Delta writes them in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from schemas.storage import S3_SCHEMES, s3_filesystem

from jobs.delta_tables import table_version

# Table features that make the files differ from the rows a Delta reader sees.
UNSUPPORTED_FEATURES = ("deletionVectors", "columnMapping")


class UnsupportedDeltaTable(RuntimeError):
    """The table uses a feature that reading its Parquet files directly would get wrong."""


@dataclass(frozen=True)
class PinnedTable:
    path: str
    version: int
    frame: DataFrame                      # the same version through Spark, for what pyarrow does not do
    files: dict[tuple[str, ...], list[str]] = field(default_factory=dict)  # partition values -> file URIs

    def files_where(self, **partition_values: str) -> list[str]:
        """Files of the partitions matching ``partition_values`` (columns not named match anything)."""
        return sorted(uri for values, uris in self.files.items() for uri in uris
                      if all(dict(values).get(k) == v for k, v in partition_values.items()))

    @property
    def partitions(self) -> list[tuple[tuple[str, str], ...]]:
        return sorted(self.files)


def pin(spark: SparkSession, path: str) -> PinnedTable | None:
    """The latest version of the Delta table at ``path`` and its files, or None without a table."""
    version = table_version(spark, path)
    if version is None:
        return None
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first().asDict()
    features = set(detail.get("tableFeatures") or ())
    mapping = (detail.get("properties") or {}).get("delta.columnMapping.mode", "none")
    unsupported = sorted(features & set(UNSUPPORTED_FEATURES)) + (["columnMapping"] if mapping != "none" else [])
    if unsupported:
        raise UnsupportedDeltaTable(
            f"{path} uses {', '.join(sorted(set(unsupported)))}: the snapshot builder reads the table's Parquet "
            "files directly and needs a table without them (recreate it, or disable the feature and rewrite it)")
    frame = spark.read.format("delta").option("versionAsOf", version).load(path)
    partition_columns = list(detail.get("partitionColumns") or ())
    files: dict[tuple, list[str]] = {}
    for uri in frame.inputFiles():
        files.setdefault(partition_values(uri, partition_columns), []).append(uri)
    return PinnedTable(path, version, frame, {k: sorted(v) for k, v in files.items()})


def partition_values(uri: str, columns: list[str]) -> tuple[tuple[str, str], ...]:
    """``((column, value), ...)`` from the ``column=value`` folders of a data file's URI."""
    found = {}
    for part in urlsplit(uri).path.split("/")[:-1]:
        name, sep, value = part.partition("=")
        if sep and unquote(name) in columns:
            found[unquote(name)] = unquote(unquote(value))  # Hive escaping inside URI escaping
    missing = [c for c in columns if c not in found]
    if missing:
        raise UnsupportedDeltaTable(f"no {missing} folder in {uri}: not a Hive-style partition layout")
    return tuple((c, found[c]) for c in columns)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem and path for one of Spark's file URIs (percent-encoded:
    Hive's escapes of partition values are themselves escaped once more)."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return pafs.LocalFileSystem(), unquote(parts.path) if parts.scheme else uri
    if parts.scheme in S3_SCHEMES:  # the store conf/storage.toml names, as Spark's s3a reaches it
        return s3_filesystem(), parts.netloc + unquote(parts.path)
    return pafs.FileSystem.from_uri(uri)


def read_columns(uris: Iterable[str], columns: list[str]) -> pa.Table:
    """``columns`` of all ``uris``, as one table whose columns are single arrays."""
    tables = [pq.read_table(path, columns=columns, filesystem=fs) for fs, path in map(_filesystem, uris)]
    if not tables:
        raise ValueError("no files to read")
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def column_array(table: pa.Table, name: str) -> pa.Array:
    """One column of ``table`` as a single array (a table of no rows may have no chunks)."""
    return table.column(name).combine_chunks()


def uncompressed_bytes(uris: Iterable[str], columns: list[str]) -> int:
    """What ``columns`` of ``uris`` take decoded, from the Parquet footers (an estimate of Arrow memory)."""
    total = 0
    for fs, path in map(_filesystem, uris):
        with fs.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                if column.path_in_schema.split(".")[0] in columns:
                    total += column.total_uncompressed_size
    return total


def read_in_ranges(uris: list[str], columns: list[str], key_column: str,
                   numeric_keys: Callable[[pa.Array], np.ndarray | None], budget_bytes: int) -> Iterator[pa.Table]:
    """``columns`` of ``uris`` as one table or, when they would take more than
    ``budget_bytes`` decoded, as several: each holds the rows whose key (``numeric_keys``
    of ``key_column``) falls in one range, the ranges in increasing order. Each file
    is then read once per range: time traded for bounded memory. Keys that are not
    numeric (``numeric_keys`` gives None) come in one table whatever the budget."""
    parts = max(1, math.ceil(uncompressed_bytes(uris, columns) / max(budget_bytes, 1)))
    keys = numeric_keys(column_array(read_columns(uris, [key_column]), key_column)) if parts > 1 else None
    if keys is None or not len(keys):
        yield read_columns(uris, columns)
        return
    bounds = np.unique(np.quantile(keys, np.linspace(0, 1, parts + 1)[1:-1], method="lower")).tolist()
    for low, high in zip([None, *bounds], [*bounds, None]):
        pieces = []
        for uri in uris:
            table = read_columns([uri], columns)
            keys = numeric_keys(column_array(table, key_column))
            keep = np.ones(len(keys), bool)
            if low is not None:
                keep &= keys > low
            if high is not None:
                keep &= keys <= high
            pieces.append(table.filter(pa.array(keep)))
        yield pa.concat_tables(pieces).combine_chunks()
