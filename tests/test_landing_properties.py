"""Landing files of bad input, drawn by hypothesis, through the validation rules: every
line is either accepted or quarantined with a reason, and received = accepted + rejected.

Lines are valid rows, rows with wrong types, missing fields, negative or huge ids,
unknown event types, NaN or negative prices, timestamps far in the future or before
2000, unknown fields, oversized lines, JSON that is broken, not an object, followed by
more, or single-quoted, and repeats of earlier events (exact copies and the same event
written differently).

The plain-Python rules (``schemas.validate_record``, which the collector applies at
the door) give the expected verdict of each line; they take hundreds of examples, fast.
Spark, a JVM away, takes few, derandomized: the landing parser and validation
(``jobs.landing``, ``jobs.validation``) must agree with them line by line on both
tables, and the whole ingest (``jobs.ingest.run_ingest``: quarantine, duplicates,
counts) on events files landed one after another in one lake. Known differences that
change no verdict are those of tests/test_validation_parity.py; no line drawn here is
a partial ISO date, which Spark accepts and Python does not.
"""
from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from jobs.ingest import run_ingest
from jobs.paths import DataPaths
from schemas import EVENT_TYPES, EVENTS, PRODUCTS, Table, validate_record
from schemas.fields import UINT32_MAX

AS_OF = datetime(2026, 10, 5, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_LINE_BYTES = 512
SETTINGS = {"max_files_per_trigger": 100, "max_line_bytes": MAX_LINE_BYTES}
TRUNCATED_RAW = 1024  # characters of an oversized line kept in the quarantine (jobs/landing.py)
DUPLICATE_IN_BATCH = "duplicate event (repeated in this batch)"
DUPLICATE_STORED = "duplicate event (already ingested)"
MALFORMED = "record"  # the field a verdict names for a line that is no JSON object


# --- what lands ---------------------------------------------------------------------

def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_some_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
_bad_scalar = st.one_of(st.booleans(), st.floats(), _some_text, st.lists(st.integers(), max_size=2))
# Around a value given as text: what Python's strip() and int() remove, more than spaces.
_padding = st.sampled_from(["", " ", "\t", "\u00a0", "\u2003"])


def _as_text(values: st.SearchStrategy) -> st.SearchStrategy[str]:
    return st.tuples(_padding, values, _padding).map(lambda t: f"{t[0]}{t[1]}{t[2]}")


_DAY = 86_400
_moments = st.integers(-30 * _DAY, _DAY).map(lambda s: AS_OF + timedelta(seconds=s))  # up to the limit

# Per field: values the rules accept (small ids, so that events repeat), and values they refuse.
EVENT_FIELDS = {
    "user_id": (st.one_of(st.integers(0, 30), st.integers(0, 2**63 - 1), _as_text(st.integers(0, 30))),
                st.one_of(st.integers(max_value=-1), st.integers(2**63, 10**40), _bad_scalar)),
    "event_type": (st.sampled_from(EVENT_TYPES),
                   st.one_of(st.sampled_from(["VIEW", "teleport", "", " view"]), _bad_scalar)),
    "product_id": (st.one_of(st.integers(0, 30), st.integers(0, UINT32_MAX), _as_text(st.integers(0, 30))),
                   st.one_of(st.integers(UINT32_MAX + 1, 2**40), st.integers(max_value=-1), _bad_scalar)),
    "timestamp": (st.one_of(_moments.map(_iso), _moments.map(lambda m: int(m.timestamp())),
                            st.just(_iso(AS_OF + timedelta(days=1)))),
                  st.one_of(st.integers(1, 7000).map(lambda years: f"{min(2026 + years, 9999)}-01-01T00:00:00Z"),
                            st.sampled_from(["1999-12-31T23:59:59Z", _iso(AS_OF + timedelta(days=1, seconds=1)),
                                             "yesterday", "", "  "]),
                            st.integers(-(2**40), 2**40), st.floats(), st.booleans())),
}
PRODUCT_FIELDS = {
    "product_id": EVENT_FIELDS["product_id"],
    "category": (st.one_of(st.sampled_from(["shoes", "shoes.running", "électronique"]), st.integers()),
                 st.sampled_from(["", "  ", "\t", "\u2003"])),
    "price": (st.one_of(st.floats(0, 1e9), _as_text(st.sampled_from(["12.5", "0", "1e3"]))),
              st.one_of(st.floats(max_value=-0.01), st.sampled_from([float("nan"), float("inf"), 1e9 + 1]),
                        st.sampled_from(["NaN", "-1", "cheap"]), st.booleans())),
    "active": (st.one_of(st.booleans(), _as_text(st.sampled_from(["true", "false", "TRUE"]))),
               st.one_of(st.sampled_from(["yes", "no"]), st.integers(0, 1))),
    "other_features": (st.dictionaries(st.sampled_from(["brand", "colour"]), st.text(max_size=5), max_size=2),
                       st.one_of(st.lists(st.integers(), max_size=2), _some_text)),
}
_MISSING = object()


@st.composite
def records(draw, fields: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]]) -> dict:
    """A valid row, mostly; else one with a field or two refused, null or left out;
    sometimes with an unknown field besides (the ingest ignores those)."""
    row = {name: draw(good) for name, (good, _) in fields.items()}
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2)):
        row[name] = draw(st.one_of(fields[name][1], st.just(None), st.just(_MISSING)))
    if draw(st.integers(0, 9)) == 0:
        row["session"] = draw(st.text(max_size=8))
    return {k: v for k, v in row.items() if v is not _MISSING}


event_records = records(EVENT_FIELDS)
product_records = records(PRODUCT_FIELDS)


def as_lines(rows: st.SearchStrategy[dict]) -> st.SearchStrategy[str]:
    """One landing line: a row's JSON (mostly), padded past the size limit, cut short,
    two rows on one line, a row and then text, Python's repr (single quotes), or no
    JSON object at all."""
    line = rows.map(json.dumps)
    return st.one_of(
        *[line] * 8,
        rows.map(lambda row: json.dumps({**row, "padding": "x" * MAX_LINE_BYTES})),
        line.flatmap(lambda text: st.integers(1, max(1, len(text) - 1)).map(lambda cut: text[:cut])),
        st.tuples(line, st.sampled_from(["", " ", ","]), line).map("".join),
        st.tuples(line, st.sampled_from(["]", " x", " // note"])).map("".join),
        rows.map(repr),
        st.sampled_from(["", "[]", "[1, 2]", "null", "42", '"view"', "not json", "{", "{}"]),
        _some_text,
    )


@st.composite
def landing_file(draw, rows: st.SearchStrategy[dict]) -> list[str]:
    """Lines of one file, some repeated: exact copies, and the same row with its keys reordered."""
    lines = draw(st.lists(as_lines(rows), min_size=1, max_size=25))
    for index in draw(st.lists(st.integers(0, len(lines) - 1), max_size=5)):
        line = lines[index]
        reordered = _reordered(line)
        lines.insert(draw(st.integers(index + 1, len(lines))), reordered if draw(st.booleans()) else line)
    return lines


def _reordered(line: str) -> str:
    """The same row written differently: keys in reverse order, an integer id as text."""
    try:
        row = json.loads(line)
    except ValueError:
        return line
    if not isinstance(row, dict):
        return line
    if isinstance(row.get("user_id"), int) and not isinstance(row["user_id"], bool):
        row["user_id"] = str(row["user_id"])
    return json.dumps(dict(reversed(row.items())))


# --- the expected verdicts (plain Python) ---------------------------------------------

@dataclass
class Verdicts:
    """Per line of a file, in order: the typed key of an accepted event or row, or the
    reason it is quarantined."""

    accepted: list[tuple[int, tuple]] = field(default_factory=list)     # (line number, key)
    rejected: list[tuple[int, str]] = field(default_factory=list)       # (line number, reason)

    @property
    def received(self) -> int:
        return len(self.accepted) + len(self.rejected)


def expected_verdicts(table: Table, lines: list[str], stored_keys: set[tuple] | None = None) -> Verdicts:
    """What the ingest must do with ``lines``: the size limit first, then JSON, then the
    table's rules; then, given the keys already stored (``stored_keys``, None to leave
    duplicates alone), of events with one key the first stays and the others are
    repeats, or all are if it is stored already."""
    verdicts, seen = Verdicts(), set()
    for number, line in enumerate(lines):
        reason, typed = _judge(table, line)
        if reason is None and table is EVENTS and stored_keys is not None:
            key = _key(typed)
            if key in stored_keys:
                reason = DUPLICATE_STORED
            elif key in seen:
                reason = DUPLICATE_IN_BATCH
            seen.add(key)
        if reason is None:
            verdicts.accepted.append((number, _key(typed)))
        else:
            verdicts.rejected.append((number, reason))
    return verdicts


def _judge(table: Table, line: str) -> tuple[str | None, dict | None]:
    if len(line.encode("utf-8")) > MAX_LINE_BYTES:
        return f"line longer than {MAX_LINE_BYTES} bytes", None
    try:
        record = json.loads(line)
    except ValueError:
        return f"{MALFORMED}: not valid JSON", None
    typed, reason = validate_record(table, record, AS_OF)
    return reason, typed


def _key(typed: dict) -> tuple:
    """An accepted row's identity: EVENTS.key for events (timestamps in microseconds), else the id."""
    names = EVENTS.key if "event_type" in typed else ("product_id",)
    return tuple((typed[n] - EPOCH) // timedelta(microseconds=1) if isinstance(typed[n], datetime) else typed[n]
                 for n in names)


def reason_field(reason: str) -> str:
    """What a reason is compared by: the field it names (``record`` for a line that is
    no JSON object), or the whole reason for the size limit and repeats."""
    if reason.startswith(("malformed JSON", f"{MALFORMED}:")):
        return MALFORMED
    if reason.startswith(("line longer than", "duplicate event")):
        return reason
    return reason.split(":", 1)[0]


# --- properties of the plain-Python rules (many examples, no Spark) ---------------------

@settings(max_examples=200, derandomize=True, deadline=None)
@given(events=landing_file(event_records), products=landing_file(product_records))
def test_the_rules_give_every_line_one_verdict_with_a_reason(events, products):
    """Nothing raises; each line is accepted or quarantined with a non-empty reason;
    accepted events are distinct; received = accepted + rejected = lines."""
    for table, lines in ((EVENTS, events), (PRODUCTS, products)):
        verdicts = expected_verdicts(table, lines, stored_keys=set())
        numbers = sorted([n for n, _ in verdicts.accepted] + [n for n, _ in verdicts.rejected])
        assert numbers == list(range(len(lines)))
        assert verdicts.received == len(lines)
        assert all(reason.strip() for _, reason in verdicts.rejected)
        if table is EVENTS:
            keys = [key for _, key in verdicts.accepted]
            assert len(keys) == len(set(keys))


@settings(max_examples=400, derandomize=True, deadline=None)
@given(event=event_records)
def test_what_the_collector_acknowledges_the_ingest_accepts(event):
    """An event the collector takes lands as a line the ingest's rules accept: nothing
    acknowledged is quarantined later."""
    from lookup_server.collector.landing_writer import encode_rows
    from lookup_server.collector.parsing import InvalidBatch, parse_events

    try:
        parsed = parse_events([event], AS_OF)
    except InvalidBatch:  # refused at the door, where the client hears why
        return
    line = encode_rows([parsed[0].landing_row]).decode("utf-8").rstrip("\n")
    assert _judge(EVENTS, line)[0] is None


# --- Spark agrees, line by line (a few examples) ----------------------------------------

def _quarantine_of(lines: list[str], verdicts: Verdicts) -> Counter:
    """(raw as quarantined, reason as compared) of every refused line."""
    def raw(line: str) -> str:
        return line[:TRUNCATED_RAW] + "…" if len(line.encode("utf-8")) > MAX_LINE_BYTES else line
    return Counter((raw(lines[n]), reason_field(reason)) for n, reason in verdicts.rejected)


@pytest.mark.spark
@settings(max_examples=4, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=landing_file(event_records), products=landing_file(product_records))
def test_spark_validation_judges_every_line_as_the_rules_do(spark, events, products):
    """Through the landing parser and split_valid, each line comes out once: accepted
    with the values the rules give it, or refused with a reason naming the same field."""
    from jobs.landing import parse_json_lines
    from jobs.validation import RAW, split_valid

    for table, lines in ((EVENTS, events), (PRODUCTS, products)):
        frame = spark.createDataFrame([(line, "landed.jsonl") for line in lines], "value string, _source_file string")
        valid, rejected = split_valid(parse_json_lines(frame, table, MAX_LINE_BYTES), table, AS_OF)
        for f in table.fields:  # timestamps as microseconds: Spark collects naive local datetimes
            if f.type == "timestamp":
                valid = valid.withColumn(f.name, F.unix_micros(f.name))
        accepted = Counter((r[RAW], _key(r.asDict())) for r in valid.collect())
        refused = Counter((r.raw, reason_field(r.reason)) for r in rejected.collect())
        verdicts = expected_verdicts(table, lines)
        assert accepted == Counter((lines[n], key) for n, key in verdicts.accepted), table.name
        assert refused == _quarantine_of(lines, verdicts), table.name


@pytest.fixture(scope="module")
def landing_zone(tmp_path_factory):
    """One lake for every example of the ingest property; each lands a new file in it."""
    return DataPaths(tmp_path_factory.mktemp("landing-properties")), itertools.count()


def _stored_event_keys(spark, paths: DataPaths) -> set[tuple]:
    if not (paths.lake / "events").exists():
        return set()
    events = spark.read.format("delta").load(paths.table("events"))
    return {tuple(r) for r in events.select("user_id", "event_type", "product_id",
                                            F.unix_micros("timestamp")).collect()}


@pytest.mark.spark
@settings(max_examples=2, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=landing_file(event_records))
def test_ingest_quarantines_or_stores_every_line_and_counts_them_all(spark, landing_zone, events):
    """The whole ingest of one more events file: received = accepted + rejected = its
    lines; the quarantine holds exactly the lines the rules refuse or that repeat an
    event (of this file or stored before), each with its reason; the table gains
    exactly the other events, once each."""
    paths, numbers = landing_zone
    folder = paths.landing_for("events").local_path
    folder.mkdir(parents=True, exist_ok=True)
    earlier = sorted(folder.glob("example-*.jsonl"))
    # The first lines of the file before, again: events stored already, or refused again.
    lines = events + (earlier[-1].read_text(encoding="utf-8").splitlines()[:5] if earlier else [])
    name = f"example-{next(numbers):03d}.jsonl"
    stored_before = _stored_event_keys(spark, paths)
    (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    counts = run_ingest(spark, paths, AS_OF, SETTINGS, tables=["events"])["events"]

    verdicts = expected_verdicts(EVENTS, lines, stored_before)
    assert (counts.received, counts.accepted, counts.rejected) == (
        len(lines), len(verdicts.accepted), len(verdicts.rejected))
    quarantined = (spark.read.format("delta").load(paths.table("events_rejected"))
                   .where(F.col("source_file").endswith("/" + name)).collect())
    assert Counter((r.raw, reason_field(r.reason)) for r in quarantined) == _quarantine_of(lines, verdicts)
    assert _stored_event_keys(spark, paths) == stored_before | {key for _, key in verdicts.accepted}
