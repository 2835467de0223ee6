"""Compile a table's Field rules (schemas/) into Spark column expressions.

Input rows arrive with every field as a string (that is how JSON lines and CSV are
read, and Parquet is cast to match), plus:

``_raw``          the row as received, kept verbatim for the quarantine table
``_source_file``  where it came from
``_malformed``    a reason found before field checks (bad JSON, oversized line), or null

``split_valid`` returns the typed valid rows and the rejected rows with the reason
of the first rule each broke, mirroring ``schemas.validate_record``.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.fields import Field, Table, format_bound

RAW, SOURCE_FILE, MALFORMED = "_raw", "_source_file", "_malformed"
REASON = "_reason"

# Whitespace as Python's str.strip() and int() see it, which the plain-Python rules use:
# Java's isWhitespace plus the no-break spaces and NEL, which Python counts too. Spark's
# trim() removes spaces only, so a tab-only category passed as non-empty there.
_SPACE = r"[\p{javaWhitespace}\u0085\u00a0\u2007\u202f]"
_INTEGER_TEXT = rf"^{_SPACE}*[+-]?[0-9]+{_SPACE}*$"
# datetime's range in Python; beyond it a value is no timestamp for us, and
# Spark's timestamp_seconds would overflow.
_EPOCH_MIN, _EPOCH_MAX = -62_135_596_800, 253_402_300_799


def _is_integer_text(c: Column) -> Column:
    return c.rlike(_INTEGER_TEXT)


def _strip(c: Column) -> Column:
    return F.regexp_replace(c, rf"^{_SPACE}+|{_SPACE}+$", "")


def _as_decimal(c: Column) -> Column:
    return _strip(c).try_cast("decimal(38,0)")


def _typed_and_checks(f: Field, as_of: datetime) -> tuple[Column, list[tuple[Column, str]]]:
    """The typed value of field ``f`` and its (broken-when, reason) checks in order."""
    c = F.col(f.name)
    checks: list[tuple[Column, str]] = []
    name = f.name

    def bounds(v: Column) -> None:
        if f.min is not None:
            checks.append((v < F.lit(f.min), f"{name}: below minimum {format_bound(f.min)}"))
        if f.max is not None:
            checks.append((v > F.lit(f.max), f"{name}: above maximum {format_bound(f.max)}"))

    if f.type == "int64":
        number = _as_decimal(c)
        checks.append((~_is_integer_text(c), f"{name}: not an integer"))
        checks.append((number.isNull(), f"{name}: above maximum {format_bound(f.max)}" if f.max else f"{name}: out of range"))
        bounds(number)
        typed = number.try_cast("bigint")
    elif f.type in ("float64", "float32"):
        number = _strip(c).try_cast("double")
        checks.append((number.isNull(), f"{name}: not a number"))
        checks.append((F.isnan(number) | (F.abs(number) == float("inf")), f"{name}: not a finite number"))
        bounds(number)
        typed = number if f.type == "float64" else number.cast("float")
    elif f.type == "string":
        if f.non_empty:
            checks.append((_strip(c) == "", f"{name}: empty"))
        if f.allowed is not None:
            checks.append((~c.isin(*f.allowed), f"{name}: unknown value"))
        typed = c
    elif f.type == "bool":
        text = F.lower(_strip(c))
        checks.append((~text.isin("true", "false"), f"{name}: expected true or false"))
        typed = text == "true"
    elif f.type == "timestamp":
        epoch = _as_decimal(c)
        from_epoch = F.when(_is_integer_text(c) & epoch.between(_EPOCH_MIN, _EPOCH_MAX),
                            F.timestamp_seconds(epoch.try_cast("bigint")))
        typed = F.when(_is_integer_text(c), from_epoch).otherwise(_strip(c).try_cast("timestamp"))
        checks.append((typed.isNull(), f"{name}: not a timestamp (ISO-8601 or epoch seconds)"))
        if f.min_timestamp:
            checks.append((typed < F.lit(datetime.fromisoformat(f.min_timestamp)), f"{name}: before {f.min_timestamp}"))
        if f.max_future_seconds is not None:
            limit = F.lit(as_of) + F.make_interval(secs=F.lit(f.max_future_seconds))
            checks.append((typed > limit, f"{name}: in the future"))
    elif f.type == "map<string,string>":
        typed = F.from_json(c, "map<string,string>")
        checks.append((typed.isNull(), f"{name}: expected an object of strings"))
    elif f.type == "array<int64>":
        typed = F.from_json(c, "array<bigint>")
        checks.append((typed.isNull(), f"{name}: expected a list of ids"))
        low = f.min if f.min is not None else -(2**63)
        high = f.max if f.max is not None else 2**63 - 1
        checks.append((F.exists(typed, lambda x: x.isNull() | (x < low) | (x > high)),
                       f"{name}: id out of range [{format_bound(low)}, {format_bound(high)}]"))
    else:  # pragma: no cover - tables only use the types above
        raise ValueError(f"no Spark rule for type {f.type}")
    return typed, checks


def _missing(f: Field) -> Column:
    c = F.col(f.name)
    return c.isNull() if f.type == "string" else c.isNull() | (_strip(c) == "")


def with_missing_columns(df: DataFrame, table: Table) -> DataFrame:
    """Add any of ``table``'s columns that ``df`` lacks, as null strings."""
    for f in table.fields:
        if f.name not in df.columns:
            df = df.withColumn(f.name, F.lit(None).cast("string"))
    return df


def first_broken_rule(table: Table, as_of: datetime) -> tuple[Column, dict[str, Column]]:
    """The reason column (null when the row is valid) and the typed value per field."""
    reasons: list[Column] = [F.col(MALFORMED)]
    typed_columns: dict[str, Column] = {}
    for f in table.fields:
        typed, checks = _typed_and_checks(f, as_of)
        present = ~_missing(f)
        if f.required:
            missing = ~present
            if f.required_unless is not None:
                other, value = f.required_unless
                excused = F.coalesce(F.lower(_strip(F.col(other).cast("string"))) == F.lit(value), F.lit(False))
                missing = missing & ~excused
            reasons.append(F.when(missing, F.lit(f"{f.name}: missing")))
        for broken, reason in checks:
            reasons.append(F.when(present & broken, F.lit(reason)))
        typed_columns[f.name] = F.when(present, typed)
    return F.coalesce(*reasons), typed_columns


def split_valid(df: DataFrame, table: Table, as_of: datetime) -> tuple[DataFrame, DataFrame]:
    """``(valid, rejected)``: valid has ``table``'s typed columns plus ``_source_file`` and ``_raw``;
    rejected follows the REJECTED table (raw, reason, source_file, rejected_at)."""
    df = with_missing_columns(df, table)
    if MALFORMED not in df.columns:
        df = df.withColumn(MALFORMED, F.lit(None).cast("string"))
    reason, typed_columns = first_broken_rule(table, as_of)
    judged = df.withColumn(REASON, reason)
    valid = judged.where(F.col(REASON).isNull()).select(
        *[typed_columns[f.name].alias(f.name) for f in table.fields], F.col(SOURCE_FILE), F.col(RAW))
    rejected = rejected_rows(judged.where(F.col(REASON).isNotNull()), as_of)
    return valid, rejected


def rejected_rows(df: DataFrame, as_of: datetime, reason: Column | None = None) -> DataFrame:
    """Rows of ``df`` (with ``_raw``, ``_source_file`` and a reason) in the REJECTED layout."""
    return df.select(
        F.col(RAW).alias("raw"),
        (reason if reason is not None else F.col(REASON)).alias("reason"),
        F.col(SOURCE_FILE).alias("source_file"),
        F.lit(as_of).cast("timestamp").alias("rejected_at"),
    )
