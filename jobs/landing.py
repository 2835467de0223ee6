"""Read landing-zone files as streams of all-string rows ready for validation.

Each table's folder (``landing/<table>/``) may hold JSON lines (``*.json``,
``*.jsonl``), CSV with a header (``*.csv``; columns in the table's order, maps
and lists as JSON text) and
Parquet (``*.parquet``). Dot- and underscore-prefixed files are ignored, so
writers drop files in by rename. Each format is its own stream with its own
checkpoint: the checkpoint records which files were processed, which is what
makes re-running ingest over the same files add nothing.

The ``parse_*`` functions are the pure transforms; ``read_stream`` is the I/O edge.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from schemas.fields import Table
from schemas.storage import Location

from jobs.validation import MALFORMED, RAW, SOURCE_FILE

FORMATS = {"json": "*.{json,jsonl}", "csv": "*.csv", "parquet": "*.parquet"}
CORRUPT = "_corrupt"
_LINE_END = "_line_end"


def string_schema(table: Table, corrupt_column: bool = False) -> T.StructType:
    fields = [T.StructField(f.name, T.StringType()) for f in table.fields]
    if corrupt_column:
        fields.append(T.StructField(CORRUPT, T.StringType()))
    return T.StructType(fields)


def parse_json_lines(lines: DataFrame, table: Table, max_line_bytes: int) -> DataFrame:
    """``(value, _source_file)`` text lines -> table fields as strings, ``_raw``, ``_malformed``.

    Nested values (maps, lists) stay as their JSON text for validation to parse.

    ``from_json`` reads the first JSON value of its input and ignores whatever follows,
    so a line holding two objects (a writer that forgot a newline) used to lose the
    second without a trace. Each line is therefore parsed followed by a marker,
    ``[<line>,{"_line_end":"1"}]``: the line is one JSON value exactly when the marker
    comes out as the second element. Single quotes (a writer of Python's repr) are
    refused too: they are not JSON.
    """
    marker = F.lit(f',{{"{_LINE_END}":"1"}}]')
    element = T.StructType([*string_schema(table).fields, T.StructField(_LINE_END, T.StringType())])
    values = F.from_json(F.concat(F.lit("["), F.col("value"), marker), T.ArrayType(element),
                         {"mode": "PERMISSIVE", "allowSingleQuotes": "false"})
    whole_line = F.coalesce((F.size(values) == 2) & (F.element_at(values, 2)[_LINE_END] == "1"), F.lit(False))
    oversized = F.octet_length("value") > max_line_bytes
    return (
        # An object with none of the table's fields comes out null, like no object at all.
        lines.withColumn("_json", F.when(~oversized & whole_line, F.element_at(values, 1)))
        .select(
            *[F.col(f"_json.{f.name}").alias(f.name) for f in table.fields],
            F.when(oversized, F.concat(F.substring("value", 1, 1024), F.lit("…")))
             .otherwise(F.col("value")).alias(RAW),
            F.col(SOURCE_FILE),
            F.when(oversized, F.lit(f"line longer than {max_line_bytes} bytes"))
             .when(F.col("_json").isNull(), F.lit("malformed JSON: not one object per line"))
             .alias(MALFORMED),
        )
    )


def parse_csv_rows(rows: DataFrame, table: Table) -> DataFrame:
    """CSV rows read with ``string_schema(table, corrupt_column=True)`` -> validation input."""
    as_json = F.to_json(F.struct(*[F.col(f.name) for f in table.fields]))
    return rows.select(
        *[F.col(f.name) for f in table.fields],
        F.coalesce(F.col(CORRUPT), as_json).alias(RAW),
        F.col(SOURCE_FILE),
        F.when(F.col(CORRUPT).isNotNull(), F.lit("malformed CSV row: wrong number of fields"))
         .alias(MALFORMED),
    )


def parquet_as_strings(rows: DataFrame, table: Table) -> DataFrame:
    """Parquet rows of any column types -> validation input (maps and lists as JSON text)."""
    columns = []
    for f in table.fields:
        if f.name not in rows.columns:
            columns.append(F.lit(None).cast("string").alias(f.name))
        elif isinstance(rows.schema[f.name].dataType, (T.MapType, T.ArrayType, T.StructType)):
            columns.append(F.to_json(f.name).alias(f.name))
        else:
            columns.append(F.col(f.name).cast("string").alias(f.name))
    present = [c for c in rows.columns if c != SOURCE_FILE]
    return rows.select(*columns, F.to_json(F.struct(*present)).alias(RAW), F.col(SOURCE_FILE),
                       F.lit(None).cast("string").alias(MALFORMED))


def has_files(folder: Location, fmt: str) -> bool:
    pattern = FORMATS[fmt]
    suffixes = pattern[pattern.index("{") + 1:-1].split(",") if "{" in pattern else [pattern[2:]]
    return any(name.rpartition(".")[2] in suffixes and not name.startswith((".", "_"))
               for name in Location.of(folder).children())


def read_stream(spark: SparkSession, folder: Location, table: Table, fmt: str,
                max_files_per_trigger: int, max_line_bytes: int) -> DataFrame:
    """A streaming DataFrame over ``folder``'s files of format ``fmt``, parsed for validation."""
    reader = (spark.readStream.option("pathGlobFilter", FORMATS[fmt])
              .option("maxFilesPerTrigger", max_files_per_trigger))
    source_file = F.col("_metadata.file_path").alias(SOURCE_FILE)
    if fmt == "json":
        lines = reader.format("text").load(str(folder)).select("value", source_file)
        return parse_json_lines(lines, table, max_line_bytes)
    if fmt == "csv":
        rows = (reader.format("csv").schema(string_schema(table, corrupt_column=True))
                .option("header", True).option("mode", "PERMISSIVE")
                # RFC 4180 quoting: a quote inside a quoted field is doubled (how
                # csv writers escape the JSON text of maps and lists).
                .option("escape", '"')
                .option("columnNameOfCorruptRecord", CORRUPT)
                .load(str(folder)))
        return parse_csv_rows(rows.select("*", source_file), table)
    if fmt == "parquet":
        # Parquet brings its own types; infer them from the files present at start.
        schema = spark.read.option("pathGlobFilter", FORMATS[fmt]).parquet(str(folder)).schema
        rows = reader.format("parquet").schema(schema).load(str(folder))
        return parquet_as_strings(rows.select("*", source_file), table)
    raise ValueError(f"unknown landing format {fmt!r}; expected one of {sorted(FORMATS)}")
