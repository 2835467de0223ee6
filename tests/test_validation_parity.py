"""The Spark validation rules (jobs/validation.py) and the plain-Python ones
(schemas.validate_record) judge the same raw JSON lines alike.

Each case is one JSON line and the verdict expected from both: ``None`` (accepted)
or the field the first broken rule names (the reason's text before the first ':').
Lines that are not one JSON object are judged by the landing parser on the Spark
side ("malformed JSON: ...") and by ``validate_record`` or ``json.loads`` on the
Python side ("record: ..."); both count as the field ``record`` here.

Known representation differences, which do not change a verdict:

- JSON ``NaN``/``Infinity`` (and ``1e400``): Spark's reader renders them as the quoted
  text ``"NaN"``, which is "not a number"; Python parses a float and says "not a
  finite number". Both name ``price``.
- Non-string JSON in a string column (``"category": true``) becomes its JSON text on
  both sides, so it is accepted as the category ``"true"``.
- Spark accepts partial ISO dates (``"2026-09"``) that Python's ``fromisoformat`` refuses;
  no case below uses one.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from schemas import EVENTS, PRODUCTS, PROFILES, validate_record

pytestmark = pytest.mark.spark

AS_OF = datetime(2026, 10, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_LINE_BYTES = 65_536
WHOLE_RECORD = "record"
DROP = object()

EVENT = {"user_id": 7, "event_type": "view", "product_id": 42, "timestamp": "2026-09-30T12:00:00Z"}
PRODUCT = {"product_id": 42, "category": "shoes.running", "price": 59.9, "active": True,
           "other_features": {"brand": "acme", "stock": 3, "new": True, "dims": {"w": 2}}}
PROFILE = {"user_id": 7, "purchase_history": [1, 2], "view_history": [], "other_features": {"country": "de"}}


def _line(base: dict, **changes) -> str:
    record = {**base, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not DROP})


def ev(**changes) -> str:
    return _line(EVENT, **changes)


def pr(**changes) -> str:
    return _line(PRODUCT, **changes)


def pf(**changes) -> str:
    return _line(PROFILE, **changes)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# (table, JSON line, expected verdict: None = accepted, else the field named)
CASES = [
    # --- events: ids ---
    (EVENTS, ev(), None),
    (EVENTS, ev(user_id="7", product_id=" 43 "), None),
    (EVENTS, ev(user_id=DROP), "user_id"),
    (EVENTS, ev(user_id=None), "user_id"),
    (EVENTS, ev(user_id=""), "user_id"),
    (EVENTS, ev(user_id="abc"), "user_id"),
    (EVENTS, ev(user_id="5_000"), "user_id"),
    (EVENTS, ev(user_id=True), "user_id"),
    (EVENTS, ev(user_id=7.0), "user_id"),
    (EVENTS, ev(user_id=1e3), "user_id"),
    (EVENTS, ev(user_id=-1), "user_id"),
    (EVENTS, ev(user_id=2**63 - 1), None),
    (EVENTS, ev(user_id=2**63), "user_id"),
    (EVENTS, ev(user_id=10**40), "user_id"),
    (EVENTS, ev(product_id=2**32 - 1), None),
    (EVENTS, ev(product_id=2**32), "product_id"),
    (EVENTS, ev(product_id=-42), "product_id"),
    # --- events: type ---
    (EVENTS, ev(event_type="purchase"), None),
    (EVENTS, ev(event_type="like"), "event_type"),
    (EVENTS, ev(event_type="VIEW"), "event_type"),
    (EVENTS, ev(event_type=5), "event_type"),
    (EVENTS, ev(event_type=DROP), "event_type"),
    # --- events: timestamps ---
    (EVENTS, ev(timestamp="2026-09-30T12:00:00+02:00"), None),
    (EVENTS, ev(timestamp="2026-09-30T12:00:01"), None),
    (EVENTS, ev(timestamp="2026-09-30"), None),
    (EVENTS, ev(timestamp=1_790_000_000), None),
    (EVENTS, ev(timestamp="1790000001"), None),
    (EVENTS, ev(timestamp=1_790_000_000.5), "timestamp"),
    (EVENTS, ev(timestamp=_iso(AS_OF + timedelta(hours=23))), None),
    (EVENTS, ev(timestamp=_iso(AS_OF + timedelta(days=2))), "timestamp"),
    (EVENTS, ev(timestamp="9999-12-31T00:00:00Z"), "timestamp"),
    (EVENTS, ev(timestamp="1999-12-31T23:59:59Z"), "timestamp"),
    (EVENTS, ev(timestamp=86_400), "timestamp"),
    (EVENTS, ev(timestamp="--5"), "timestamp"),
    (EVENTS, ev(timestamp="yesterday"), "timestamp"),
    (EVENTS, ev(timestamp=True), "timestamp"),
    (EVENTS, ev(timestamp=DROP), "timestamp"),
    # --- events: extra fields and malformed lines ---
    (EVENTS, ev(session="s-1", context={"page": "home"}), None),
    (EVENTS, '{"user_id": 7, "event_type": "view"', WHOLE_RECORD),
    (EVENTS, '{"user_id": 007, "event_type": "view", "product_id": 1, "timestamp": 1790000002}', WHOLE_RECORD),
    (EVENTS, "[1, 2]", WHOLE_RECORD),
    (EVENTS, '"view"', WHOLE_RECORD),
    (EVENTS, "", WHOLE_RECORD),
    # one JSON object per line, nothing after it (Spark's reader used to ignore what follows)
    (EVENTS, ev() + ev(user_id=8), WHOLE_RECORD),
    (EVENTS, ev(user_id=9) + " trailing", WHOLE_RECORD),
    (EVENTS, ev(user_id=10) + "]", WHOLE_RECORD),
    (EVENTS, str(json.loads(ev(user_id=11))), WHOLE_RECORD),       # Python's repr: single quotes
    (EVENTS, "{}", "user_id"),
    # whitespace is what Python's strip() removes, not only spaces
    (EVENTS, ev(user_id="\t12\u2003"), None),
    # --- products ---
    (PRODUCTS, pr(), None),
    (PRODUCTS, '{"product_id": 1, "category": "a"}', None),
    (PRODUCTS, pr(product_id="43"), None),
    (PRODUCTS, pr(product_id=2**32), "product_id"),
    (PRODUCTS, pr(product_id=4.5), "product_id"),
    (PRODUCTS, '{"product_id": 2, "category": "a", "price": NaN}', "price"),
    (PRODUCTS, '{"product_id": 3, "category": "a", "price": Infinity}', "price"),
    (PRODUCTS, '{"product_id": 4, "category": "a", "price": -Infinity}', "price"),
    (PRODUCTS, '{"product_id": 5, "category": "a", "price": 1e400}', "price"),
    (PRODUCTS, pr(price=-0.01), "price"),
    (PRODUCTS, pr(price=1e9 + 1), "price"),
    (PRODUCTS, pr(price=0), None),
    (PRODUCTS, pr(price="12.5"), None),
    (PRODUCTS, pr(price="  "), None),
    (PRODUCTS, pr(price="cheap"), "price"),
    (PRODUCTS, pr(price=True), "price"),
    (PRODUCTS, pr(active=False), None),
    (PRODUCTS, pr(active="false"), None),
    (PRODUCTS, pr(active="yes"), "active"),
    (PRODUCTS, pr(active=1), "active"),
    (PRODUCTS, pr(category=""), "category"),
    (PRODUCTS, pr(category="  "), "category"),
    (PRODUCTS, pr(category=DROP), "category"),
    (PRODUCTS, pr(category="\t"), "category"),
    (PRODUCTS, pr(category="\u2003"), "category"),
    (PRODUCTS, pr(price="\t"), None),
    (PRODUCTS, pr(active="\tTrue\u00a0"), None),
    (PRODUCTS, '{"product_id": 6, "active": false}', None),         # a deactivation needs no category
    (PRODUCTS, '{"product_id": 11, "category": "a", "changed_at": "2026-09-30T12:00:00Z"}', None),
    (PRODUCTS, '{"product_id": 12, "category": "a", "changed_at": "soon"}', "changed_at"),
    (PRODUCTS, '{"product_id": 13, "category": "a", "changed_at": "2099-01-01T00:00:00Z"}', "changed_at"),
    (PRODUCTS, '{"product_id": 7, "active": "false"}', None),
    (PRODUCTS, '{"product_id": 8, "active": true}', "category"),
    (PRODUCTS, '{"product_id": 9, "active": "no"}', "category"),    # not excused: category comes first
    (PRODUCTS, '{"product_id": 10, "active": false, "category": ""}', "category"),
    (PRODUCTS, pr(category="électronique.téléphone"), None),
    (PRODUCTS, pr(category=123), None),
    (PRODUCTS, pr(category=True), None),
    (PRODUCTS, pr(other_features=["a", "b"]), "other_features"),
    (PRODUCTS, pr(other_features="plain text"), "other_features"),
    (PRODUCTS, pr(other_features='{"brand": "json-text"}'), None),
    (PRODUCTS, pr(other_features={}), None),
    (PRODUCTS, pr(other_features=None), None),
    # --- profiles ---
    (PROFILES, pf(), None),
    (PROFILES, '{"user_id": 8}', None),
    (PROFILES, pf(user_id=2**63), "user_id"),
    (PROFILES, pf(user_id=DROP), "user_id"),
    (PROFILES, pf(purchase_history=[1, -2]), "purchase_history"),
    (PROFILES, pf(view_history=[2**32]), "view_history"),
    (PROFILES, pf(view_history=[2**64]), "view_history"),
    (PROFILES, pf(purchase_history=[1, None]), "purchase_history"),
    (PROFILES, pf(purchase_history=["1"]), "purchase_history"),
    (PROFILES, pf(purchase_history=[1.0]), "purchase_history"),
    (PROFILES, pf(purchase_history=[True]), "purchase_history"),
    (PROFILES, pf(purchase_history={"a": 1}), "purchase_history"),
    (PROFILES, pf(purchase_history=5), "purchase_history"),
    (PROFILES, pf(purchase_history="[3, 4]"), None),
    (PROFILES, pf(other_features=[1]), "other_features"),
]
TABLES = (EVENTS, PRODUCTS, PROFILES)


def _lines(table) -> list[str]:
    return [line for t, line, _ in CASES if t is table]


def _field(reason: str) -> str:
    field = reason.split(":", 1)[0]
    return WHOLE_RECORD if field == "malformed JSON" else field


def _python_verdict(table, line: str) -> tuple[dict | None, str | None]:
    try:
        record = json.loads(line)
    except ValueError:
        return None, "malformed JSON: not valid JSON"
    return validate_record(table, record, AS_OF)


def _comparable(typed: dict) -> dict:
    """Timestamps as microseconds since the epoch (Spark collects naive local datetimes)."""
    return {name: (value - EPOCH) // timedelta(microseconds=1) if isinstance(value, datetime) else value
            for name, value in typed.items()}


@pytest.fixture(scope="module")
def spark_verdicts(spark):
    """Per table: ({raw: typed row} accepted, {raw: rejected row}) from parse_json_lines + split_valid."""
    from pyspark.sql import functions as F

    from jobs.landing import parse_json_lines
    from jobs.validation import RAW, split_valid

    verdicts = {}
    for table in TABLES:
        lines = spark.createDataFrame([(line, f"{table.name}.jsonl") for line in _lines(table)],
                                      "value string, _source_file string")
        valid, rejected = split_valid(parse_json_lines(lines, table, MAX_LINE_BYTES), table, AS_OF)
        for f in table.fields:  # as microseconds: Spark collects naive local datetimes
            if f.type == "timestamp":
                valid = valid.withColumn(f.name, F.unix_micros(f.name))
        rejected = rejected.withColumn("rejected_at", F.unix_micros("rejected_at"))
        accepted = {r[RAW]: {name: r[name] for name in table.names} for r in valid.collect()}
        refused = {r["raw"]: r for r in rejected.collect()}
        verdicts[table.name] = accepted, refused
    return verdicts


def test_case_lines_are_unique_per_table():
    """Verdicts are keyed by the raw line, so no line repeats within a table."""
    for table in TABLES:
        assert len(set(_lines(table))) == len(_lines(table))


@pytest.mark.parametrize("table, line, expected", CASES,
                         ids=[f"{t.name}-{i}" for i, (t, _, _) in enumerate(CASES)])
def test_spark_and_python_agree(spark_verdicts, table, line, expected):
    """Both accept the line with equal typed values, or both reject it naming the expected field."""
    typed, reason = _python_verdict(table, line)
    accepted, refused = spark_verdicts[table.name]
    assert (line in accepted) != (line in refused)
    spark_reason = refused[line]["reason"] if line in refused else None
    assert (None if reason is None else _field(reason)) == expected, reason
    assert (None if spark_reason is None else _field(spark_reason)) == expected, spark_reason
    if expected is None:
        assert accepted[line] == _comparable(typed)


def test_received_equals_accepted_plus_rejected(spark_verdicts):
    """Every line comes out exactly once, as a typed row or a quarantined one stamped with as_of."""
    for table in TABLES:
        accepted, refused = spark_verdicts[table.name]
        lines = _lines(table)
        assert len(accepted) + len(refused) == len(lines)
        assert set(accepted) | set(refused) == set(lines)
        as_of_us = (AS_OF - EPOCH) // timedelta(microseconds=1)
        assert {(r["source_file"], r["rejected_at"]) for r in refused.values()} == {(f"{table.name}.jsonl", as_of_us)}


def test_accepted_values_are_typed(spark_verdicts):
    """An offset timestamp lands as its UTC instant; other_features as a dict of strings."""
    events, _ = spark_verdicts["events"]
    offset = events[ev(timestamp="2026-09-30T12:00:00+02:00")]
    ten_utc = (datetime(2026, 9, 30, 10, 0, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
    assert offset["timestamp"] == ten_utc
    assert events[ev(timestamp=1_790_000_000)]["timestamp"] == 1_790_000_000 * 1_000_000
    assert events[ev(user_id="7", product_id=" 43 ")] | {"timestamp": None} == {
        "user_id": 7, "event_type": "view", "product_id": 43, "timestamp": None}
    products, _ = spark_verdicts["products"]
    assert products[pr()] == {"product_id": 42, "category": "shoes.running", "price": 59.9, "active": True,
                              "other_features": {"brand": "acme", "stock": "3", "new": "true", "dims": '{"w":2}'},
                              "changed_at": None}
    assert products['{"product_id": 1, "category": "a"}'] == {
        "product_id": 1, "category": "a", "price": None, "active": None, "other_features": None,
        "changed_at": None}
    profiles, _ = spark_verdicts["profiles"]
    assert profiles[pf(purchase_history="[3, 4]")]["purchase_history"] == [3, 4]
