"""Field and table definitions: one description yields the Spark schema, the Arrow
schema and the validation rules.

Neither pyspark nor pyarrow is imported at module level: the lookup server imports
this package and must start without a JVM, so the converters import lazily.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

FieldType = Literal[
    "int64", "float64", "float32", "string", "bool", "timestamp",
    "array<int64>", "array<float32>", "map<string,string>", "binary",
]

INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class Field:
    """One column: its type, whether it may be missing, and what values are valid.

    ``min``/``max`` bound numbers; ``allowed`` restricts strings to a set;
    ``non_empty`` refuses blank strings; ``required_unless`` lets a required field be
    missing when another field has a given value. A timestamp's upper bound is relative to
    the run's as-of time (``max_future_seconds``), so rules never read the clock.
    """

    name: str
    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    non_empty: bool = False
    # (other field, its value as lower-case text): the field may be missing when the
    # other field has that value, e.g. a deactivation needs no category.
    required_unless: tuple[str, str] | None = None
    min_timestamp: str | None = None
    max_future_seconds: int | None = None
    doc: str = ""

    @property
    def nullable(self) -> bool:
        """Whether a stored value may be null (a conditionally required field may be)."""
        return not self.required or self.required_unless is not None


@dataclass(frozen=True)
class Table:
    """A named table: its columns, and the columns that identify a row."""

    name: str
    fields: tuple[Field, ...]
    key: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no column {name!r}")


# --- converters -------------------------------------------------------------

def format_bound(value: float) -> str:
    """A rule's bound as people write it: 4294967295, not 4.29497e+09."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

def _spark_type(t: FieldType):
    from pyspark.sql import types as T

    simple = {
        "int64": T.LongType(), "float64": T.DoubleType(), "float32": T.FloatType(),
        "string": T.StringType(), "bool": T.BooleanType(),
        "timestamp": T.TimestampType(), "binary": T.BinaryType(),
        "array<int64>": T.ArrayType(T.LongType(), containsNull=False),
        "array<float32>": T.ArrayType(T.FloatType(), containsNull=False),
        "map<string,string>": T.MapType(T.StringType(), T.StringType()),
    }
    return simple[t]


def spark_schema(table: Table):
    """The Spark StructType of ``table``."""
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(f.name, _spark_type(f.type), nullable=f.nullable) for f in table.fields]
    )


def _arrow_type(t: FieldType):
    import pyarrow as pa

    simple = {
        "int64": pa.int64(), "float64": pa.float64(), "float32": pa.float32(),
        "string": pa.string(), "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"), "binary": pa.binary(),
        "array<int64>": pa.list_(pa.int64()), "array<float32>": pa.list_(pa.float32()),
        "map<string,string>": pa.map_(pa.string(), pa.string()),
    }
    return simple[t]


def arrow_schema(table: Table):
    """The Arrow schema of ``table``."""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, _arrow_type(f.type), nullable=f.nullable) for f in table.fields])


# --- validation in plain Python ----------------------------------------------
# The Spark jobs compile the same Field rules into column expressions
# (jobs/validation.py); this evaluator serves code without Spark (the lookup
# side, the future event collector) and cross-checks the Spark one in tests.

# Integer text as the Spark rules read it (ASCII digits, one sign, no '_').
_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")


def parse_timestamp(value: Any) -> datetime | None:
    """Whole epoch seconds (int or digit string) or ISO-8601; naive means UTC.

    A fractional number is refused, as by the Spark rules (its JSON reader renders
    1.7e9 as the text "1.7E9", which is neither)."""
    if isinstance(value, (bool, float)) or value is None:
        return None
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text):
            return parse_timestamp(int(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _check_number(f: Field, value: Any, integral: bool) -> tuple[str | None, Any]:
    if isinstance(value, bool):
        return f"{f.name}: expected a number, got a boolean", None
    if isinstance(value, str):
        try:
            if integral and not _INTEGER_TEXT.fullmatch(value):
                raise ValueError(value)
            value = int(value) if integral else float(value)
        except ValueError:
            return f"{f.name}: not {'an integer' if integral else 'a number'}: {value[:40]!r}", None
    if integral and isinstance(value, float):
        # Spark reads 7.0 as the text "7.0", which is no integer there either.
        return f"{f.name}: not an integer: {value!r}", None
    if not isinstance(value, (int, float)):
        return f"{f.name}: expected a number, got {type(value).__name__}", None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{f.name}: not a finite number", None
    if f.min is not None and value < f.min:
        return f"{f.name}: below minimum {format_bound(f.min)}", None
    if f.max is not None and value > f.max:
        return f"{f.name}: above maximum {format_bound(f.max)}", None
    return None, value


def _json_text(value: Any) -> Any:
    """A non-string JSON value as the text Spark's JSON reader gives a string column."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def _parse_json_text(value: Any) -> Any:
    """A map or list given as JSON text (as CSV carries it) parsed, as the Spark rules do."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def validate_record(table: Table, record: dict[str, Any], as_of: datetime) -> tuple[dict | None, str | None]:
    """Check one raw record against ``table``'s rules.

    Returns ``(typed_record, None)`` when valid, or ``(None, reason)`` naming the
    first rule broken. ``as_of`` bounds timestamps from above.
    """
    if not isinstance(record, dict):
        return None, "record: not a JSON object"
    typed: dict[str, Any] = {}
    for f in table.fields:
        value = record.get(f.name)
        if value is None or (isinstance(value, str) and not value.strip() and f.type != "string"):
            if f.required and not _excused(f, record):
                return None, f"{f.name}: missing"
            typed[f.name] = None
            continue
        if f.type in ("int64", "float64", "float32"):
            reason, value = _check_number(f, value, integral=f.type == "int64")
        elif f.type == "string":
            # Other JSON values become their text, as Spark's JSON reader does for string columns.
            value = _json_text(value)
            reason = None if isinstance(value, str) else f"{f.name}: expected a string"
            if reason is None and f.non_empty and not value.strip():
                reason = f"{f.name}: empty"
            if reason is None and f.allowed is not None and value not in f.allowed:
                reason = f"{f.name}: unknown value {value[:40]!r}"
        elif f.type == "bool":
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                value = value.strip().lower() == "true"
            reason = None if isinstance(value, bool) else f"{f.name}: expected true or false"
        elif f.type == "timestamp":
            parsed = parse_timestamp(value)
            reason = _check_timestamp(f, parsed, as_of)
            value = parsed
        elif f.type == "map<string,string>":
            value = _parse_json_text(value)
            ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
            reason = None if ok else f"{f.name}: expected an object of strings"
            if ok:
                value = {k: _json_text(v) for k, v in value.items() if v is not None}
        elif f.type == "array<int64>":
            reason = None
            value = _parse_json_text(value)
            if not isinstance(value, list) or any(isinstance(item, str) for item in value):
                reason = f"{f.name}: expected a list of ids"
            else:
                items = []
                for item in value:
                    reason, item = _check_number(Field(f.name, "int64", min=f.min, max=f.max), item, True)
                    if reason:
                        break
                    items.append(item)
                value = items
        else:  # pragma: no cover - table definitions only use the types above
            reason = f"{f.name}: unsupported type {f.type}"
        if reason:
            return None, reason
        typed[f.name] = value
    return typed, None


def _excused(f: Field, record: dict[str, Any]) -> bool:
    """Whether ``record`` lets the required field ``f`` be missing (``required_unless``)."""
    if f.required_unless is None:
        return False
    other, value = f.required_unless
    text = _json_text(record.get(other))
    return isinstance(text, str) and text.strip().lower() == value


def _check_timestamp(f: Field, parsed: datetime | None, as_of: datetime) -> str | None:
    if parsed is None:
        return f"{f.name}: not a timestamp (ISO-8601 or epoch seconds)"
    if f.min_timestamp and parsed < datetime.fromisoformat(f.min_timestamp):
        return f"{f.name}: before {f.min_timestamp}"
    if f.max_future_seconds is not None and (parsed - as_of).total_seconds() > f.max_future_seconds:
        return f"{f.name}: in the future"
    return None
