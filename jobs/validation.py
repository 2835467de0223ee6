"""Compile a table's Field rules (schemas/) into Spark column expressions.

Input rows arrive with every field as a string (that is how JSON lines and CSV are
read, and Parquet is cast to match), plus:

``_raw``          the row as received, kept verbatim for the quarantine table
``_source_file``  where it came from
``_malformed``    a reason found before field checks (bad JSON, oversized line), or null

``split_valid`` (``judge`` then ``split_judged``) returns the typed valid rows and the rejected rows with the reason
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


def _plain_ascii(char: Column) -> Column:
    """A one-character string is printable ASCII other than space: no whitespace class
    above holds such a character (they are all at or below U+0020 or above U+007E)."""
    return (char >= F.lit("!")) & (char <= F.lit("~"))


def _is_integer_text(c: Column) -> Column:
    # A regex, not a cast that may fail: a failed cast costs an exception per row
    # (~15 µs), about fifty times the match.
    return c.rlike(_INTEGER_TEXT)


def _strip(c: Column) -> Column:
    # Most values neither start nor end with a space: leave them as they are without
    # running the regex.
    untouched = _plain_ascii(F.substring(c, 1, 1)) & _plain_ascii(F.substring(c, -1, 1))
    return F.when(untouched, c).otherwise(F.regexp_replace(c, rf"^{_SPACE}+|{_SPACE}+$", ""))


# Columns computed once per row before the rules, which read them many times. Inlined
# in every rule instead, the regexes ran a dozen times a row, and the generated code
# grew past the size the JVM compiles: validation was most of ingest's time.
_STRIPPED, _INTEGER_TEXT_OF = "_stripped_", "_integer_text_"


def _prepared_columns(table: Table) -> list[Column]:
    columns = []
    for f in table.fields:
        if f.type != "string" or f.non_empty:
            columns.append(_strip(F.col(f.name)).alias(_STRIPPED + f.name))
        if f.type in ("int64", "timestamp"):
            columns.append(_is_integer_text(F.col(f.name)).alias(_INTEGER_TEXT_OF + f.name))
    return columns


def _typed_and_checks(f: Field, as_of: datetime) -> tuple[Column, list[tuple[Column, str]]]:
    """The typed value of field ``f`` and its (broken-when, reason) checks in order."""
    c = F.col(f.name)
    stripped = F.col(_STRIPPED + f.name)
    checks: list[tuple[Column, str]] = []
    name = f.name

    def bounds(v: Column) -> None:
        if f.min is not None:
            checks.append((v < F.lit(f.min), f"{name}: below minimum {format_bound(f.min)}"))
        if f.max is not None:
            checks.append((v > F.lit(f.max), f"{name}: above maximum {format_bound(f.max)}"))

    if f.type == "int64":
        number = stripped.try_cast("decimal(38,0)")
        checks.append((~F.col(_INTEGER_TEXT_OF + name), f"{name}: not an integer"))
        checks.append((number.isNull(), f"{name}: above maximum {format_bound(f.max)}" if f.max else f"{name}: out of range"))
        bounds(number)
        typed = number.try_cast("bigint")
    elif f.type in ("float64", "float32"):
        number = stripped.try_cast("double")
        checks.append((number.isNull(), f"{name}: not a number"))
        checks.append((F.isnan(number) | (F.abs(number) == float("inf")), f"{name}: not a finite number"))
        bounds(number)
        typed = number if f.type == "float64" else number.cast("float")
    elif f.type == "string":
        if f.non_empty:
            checks.append((stripped == "", f"{name}: empty"))
        if f.allowed is not None:
            checks.append((~c.isin(*f.allowed), f"{name}: unknown value"))
        typed = c
    elif f.type == "bool":
        text = F.lower(stripped)
        checks.append((~text.isin("true", "false"), f"{name}: expected true or false"))
        typed = text == "true"
    elif f.type == "timestamp":
        integer_text = F.col(_INTEGER_TEXT_OF + name)
        epoch = stripped.try_cast("decimal(38,0)")
        from_epoch = F.when(integer_text & epoch.between(_EPOCH_MIN, _EPOCH_MAX),
                            F.timestamp_seconds(epoch.try_cast("bigint")))
        typed = F.when(integer_text, from_epoch).otherwise(stripped.try_cast("timestamp"))
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
    return c.isNull() if f.type == "string" else c.isNull() | (F.col(_STRIPPED + f.name) == "")


def with_missing_columns(df: DataFrame, table: Table) -> DataFrame:
    """Add any of ``table``'s columns that ``df`` lacks, as null strings."""
    for f in table.fields:
        if f.name not in df.columns:
            df = df.withColumn(f.name, F.lit(None).cast("string"))
    return df


def _first_broken_rule(table: Table, as_of: datetime) -> tuple[Column, dict[str, Column]]:
    """The reason column (null when the row is valid) and the typed value per field,
    over a frame with ``_prepared_columns``."""
    reasons: list[Column] = [F.col(MALFORMED)]
    typed_columns: dict[str, Column] = {}
    for f in table.fields:
        typed, checks = _typed_and_checks(f, as_of)
        present = ~_missing(f)
        if f.required:
            missing = ~present
            if f.required_unless is not None:
                other, value = f.required_unless
                excused = F.coalesce(F.lower(F.col(_STRIPPED + other)) == F.lit(value), F.lit(False))
                missing = missing & ~excused
            reasons.append(F.when(missing, F.lit(f"{f.name}: missing")))
        for broken, reason in checks:
            reasons.append(F.when(present & broken, F.lit(reason)))
        typed_columns[f.name] = F.when(present, typed)
    return F.coalesce(*reasons), typed_columns


def judge(df: DataFrame, table: Table, as_of: datetime) -> DataFrame:
    """``df``'s rows (every field a string, plus ``_raw`` and ``_source_file``) as
    ``table``'s typed fields, ``_source_file``, ``_raw`` and ``_reason``: the first rule
    the row broke, null when it is valid. Any other column of ``df`` is kept."""
    df = with_missing_columns(df, table)
    if MALFORMED not in df.columns:
        df = df.withColumn(MALFORMED, F.lit(None).cast("string"))
    reason, typed_columns = _first_broken_rule(table, as_of)
    field_names = {f.name for f in table.fields}
    others = [c for c in df.columns if c not in field_names and c not in (MALFORMED, RAW, SOURCE_FILE)]
    return df.select("*", *_prepared_columns(table)).select(
        *[typed_columns[f.name].alias(f.name) for f in table.fields], SOURCE_FILE, RAW, *others,
        reason.alias(REASON))


def split_judged(judged: DataFrame, as_of: datetime) -> tuple[DataFrame, DataFrame]:
    """``(valid, rejected)`` of ``judge``'s rows: valid keeps its columns but the reason;
    rejected follows the REJECTED table (raw, reason, source_file, rejected_at).

    Persist ``judged`` when both halves are used: the rules are most of the cost.
    """
    valid = judged.where(F.col(REASON).isNull()).drop(REASON)
    rejected = rejected_rows(judged.where(F.col(REASON).isNotNull()), as_of)
    return valid, rejected


def split_valid(df: DataFrame, table: Table, as_of: datetime) -> tuple[DataFrame, DataFrame]:
    """``split_judged`` of ``judge``: valid has ``table``'s typed columns plus
    ``_source_file`` and ``_raw``; rejected follows the REJECTED table."""
    return split_judged(judge(df, table, as_of), as_of)


def rejected_rows(df: DataFrame, as_of: datetime, reason: Column | None = None) -> DataFrame:
    """Rows of ``df`` (with ``_raw``, ``_source_file`` and a reason) in the REJECTED layout."""
    return df.select(
        F.col(RAW).alias("raw"),
        (reason if reason is not None else F.col(REASON)).alias("reason"),
        F.col(SOURCE_FILE).alias("source_file"),
        F.lit(as_of).cast("timestamp").alias("rejected_at"),
    )
