"""The synthetic data generator: deterministic, exact, realistic enough, and valid landing data."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import generate_data as gd
from schemas import EVENTS, LANDING_TABLES, PRODUCTS, PROFILES, validate_record

SMALL = dict(users=300, products=150, events=5_001, seed=7, start="2026-10-01", days=10, chunk_size=2_000)
WINDOW_END = datetime(2026, 10, 11, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world():
    return gd.build_world(users=2_000, products=500, seed=42, start="2026-10-01", days=30)


@pytest.fixture(scope="module")
def chunk(world):
    """One 40k-event chunk over the whole window, with its session ids."""
    return gd.generate_event_chunk(world, 40_000, world.start_ts, world.end_ts, np.random.default_rng(1))


@pytest.fixture(scope="module")
def landing_jsonl(tmp_path_factory):
    out = tmp_path_factory.mktemp("landing")
    counts = gd.generate(out, fmt="jsonl", **SMALL)
    return out, counts


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _jsonl_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("*.jsonl")) for line in p.read_text().splitlines()]


@pytest.mark.parametrize("fmt", gd.FORMATS)
def test_same_seed_same_bytes(tmp_path: Path, fmt: str):
    """Two runs with the same arguments write identical files."""
    gd.generate(tmp_path / "a", fmt=fmt, **SMALL)
    gd.generate(tmp_path / "b", fmt=fmt, **SMALL)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 3 + 1 + 1  # 5,001 events in chunks of 2,000; one products and one profiles file
    assert a == b


def test_different_seed_different_data(tmp_path: Path):
    """Another seed gives other events, catalog and file names."""
    gd.generate(tmp_path / "a", **SMALL)
    gd.generate(tmp_path / "b", **{**SMALL, "seed": 8})
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert "events/events-s7-00000.jsonl" in a and "events/events-s8-00000.jsonl" in b
    assert sorted(a.values()) != sorted(b.values())
    assert a["events/events-s7-00000.jsonl"] != b["events/events-s8-00000.jsonl"]


def test_exact_event_count_and_layout(landing_jsonl):
    """Exactly --events events land, in time-ordered chunk files, with no hidden leftovers."""
    out, counts = landing_jsonl
    assert counts["events"] == 5_001 == sum(counts["event_types"].values())
    names = sorted(p.name for p in (out / "events").iterdir())
    assert names == ["events-s7-00000.jsonl", "events-s7-00001.jsonl", "events-s7-00002.jsonl"]
    sizes = [len((out / "events" / n).read_text().splitlines()) for n in names]
    assert sizes == [2_000, 2_000, 1_001]
    last_of = [json.loads((out / "events" / n).read_text().splitlines()[-1])["timestamp"] for n in names]
    first_of = [json.loads((out / "events" / n).read_text().splitlines()[0])["timestamp"] for n in names]
    assert last_of[0] <= first_of[1] and last_of[1] <= first_of[2]
    assert not [p for p in out.rglob(".*")]


@pytest.mark.parametrize("n", [1, 2, 777])
def test_chunk_has_exact_size(world, n: int):
    """A chunk holds exactly the events asked for, even when that cuts a session short."""
    cols = gd.generate_event_chunk(world, n, world.start_ts, world.end_ts, np.random.default_rng(n))
    assert {len(v) for v in cols.values()} == {n}


def test_chunk_plan_tiles_the_window():
    """Chunks cover the window back to back, each slice proportional to its events."""
    plan = gd.chunk_plan(2_500, 1_000, 0, 1_000_000)
    assert [size for size, _, _ in plan] == [1_000, 1_000, 500]
    assert plan[0][1] == 0 and plan[-1][2] == 1_000_000
    assert all(plan[i][2] == plan[i + 1][1] for i in range(len(plan) - 1))


def test_funnel_follows_views_within_sessions(chunk):
    """Every cart follows a view, every purchase a cart, of the same product in the same session."""
    first = defaultdict(lambda: float("inf"))  # (session, type, product) -> first time
    for s, t, p, ts in zip(chunk["session"], chunk["event_type"], chunk["product_id"], chunk["timestamp"]):
        key = (int(s), int(t), int(p))
        first[key] = min(first[key], int(ts))
    checked = 0
    for s, t, p, ts in zip(chunk["session"], chunk["event_type"], chunk["product_id"], chunk["timestamp"]):
        before = {gd.ADD_TO_CART: gd.VIEW, gd.PURCHASE: gd.ADD_TO_CART,
                  gd.REMOVE_FROM_CART: gd.ADD_TO_CART, gd.WISHLIST: gd.VIEW}.get(int(t))
        if before is not None:
            assert first[(int(s), before, int(p))] < ts, (s, t, p, ts)
            checked += 1
    types = np.bincount(chunk["event_type"], minlength=len(gd.EVENT_TYPES))
    assert checked > 0.1 * types[gd.VIEW]
    assert 0.07 < types[gd.ADD_TO_CART] / types[gd.VIEW] < 0.13
    assert 0.22 < types[gd.PURCHASE] / types[gd.ADD_TO_CART] < 0.38


def test_sessions_are_one_user_in_a_short_time(chunk):
    """A session belongs to one user and lasts minutes, not days."""
    users, times = defaultdict(set), defaultdict(list)
    for s, u, ts in zip(chunk["session"], chunk["user_id"], chunk["timestamp"]):
        users[int(s)].add(int(u))
        times[int(s)].append(int(ts))
    assert all(len(u) == 1 for u in users.values())
    spans = np.array([max(t) - min(t) for t in times.values()])
    assert np.median(spans) < 30 * 60 and spans.max() < 12 * 3600
    assert np.mean([len(t) for t in times.values()]) > 3


def test_no_event_before_product_added(world, chunk):
    """Events only touch products already launched, and products launched mid-window do get events."""
    added = dict(zip(world.catalog.product_id.tolist(), world.catalog.added_at.tolist()))
    assert all(ts >= added[p] for p, ts in zip(chunk["product_id"].tolist(), chunk["timestamp"].tolist()))
    new_products = {p for p, t in added.items() if t > world.start_ts}
    assert 0.2 * len(added) < len(new_products) < 0.4 * len(added)
    assert len(new_products & set(chunk["product_id"].tolist())) > 0.5 * len(new_products)


def test_popularity_and_activity_are_skewed(chunk):
    """Top 10 % of products take > 40 % of views; top 10 % of users > 30 % of events."""
    views = chunk["product_id"][chunk["event_type"] == gd.VIEW]
    per_product = np.sort(np.unique(views, return_counts=True)[1])[::-1]
    assert per_product[: len(per_product) // 10].sum() > 0.4 * per_product.sum()
    per_user = np.sort(np.unique(chunk["user_id"], return_counts=True)[1])[::-1]
    assert per_user[: len(per_user) // 10].sum() > 0.3 * per_user.sum()


def test_users_stick_to_preferred_categories(world, chunk):
    """Most of a heavy user's views fall in their three most viewed categories."""
    category_of = dict(zip(world.catalog.product_id.tolist(), world.catalog.category.tolist()))
    by_user = defaultdict(list)
    for u, t, p in zip(chunk["user_id"].tolist(), chunk["event_type"].tolist(), chunk["product_id"].tolist()):
        if t == gd.VIEW:
            by_user[u].append(category_of[p])
    heavy = [cats for cats in by_user.values() if len(cats) >= 50]
    shares = [np.sort(np.bincount(c))[::-1][:3].sum() / len(c) for c in heavy]
    assert heavy and np.median(shares) > 0.7


def test_views_follow_the_users_taste_across_categories(world, chunk):
    """Most views fall on products of the viewer's taste as of the view (after a drift, the
    new one), in every category; styles set the price tier; taste follows the age band."""
    users, catalog = world.users, world.catalog
    row_of_user = {u: i for i, u in enumerate(users.user_id.tolist())}
    row_of_product = {p: i for i, p in enumerate(catalog.product_id.tolist())}
    views = chunk["event_type"] == gd.VIEW
    user_rows = np.array([row_of_user[u] for u in chunk["user_id"][views].tolist()])
    product_rows = np.array([row_of_product[p] for p in chunk["product_id"][views].tolist()])
    at = chunk["timestamp"][views]
    taste_then = np.where(at >= users.drift_at[user_rows], users.late_taste[user_rows], users.taste[user_rows])
    assert catalog.tastes == 4
    matches = catalog.taste[product_rows] == taste_then
    assert 0.7 < matches.mean() < 0.9  # 0.75 own + 0.25 / 4 by chance
    assert all(matches[catalog.category[product_rows] == c].mean() > 0.6 for c in range(3))
    drifted = users.drift_at[user_rows] < at
    assert drifted.any() and matches[drifted].mean() > 0.7
    electronics = catalog.category == 0
    tier_price = [np.median(catalog.price[electronics & (catalog.taste == t)]) for t in range(4)]
    assert tier_price == sorted(tier_price) and tier_price[-1] > 3 * tier_price[0]
    youngest, oldest = users.age_band == gd.AGE_BANDS[0], users.age_band == gd.AGE_BANDS[-1]
    assert users.taste[youngest].mean() + 1.5 < users.taste[oldest].mean()


def test_catalog_shape(world):
    """max(5, products/50) dot-path categories under at most 8 departments; a few inactive products."""
    catalog = world.catalog
    assert len(catalog.category_names) == 10
    assert all("." in name for name in catalog.category_names)
    assert len({name.split(".")[0] for name in catalog.category_names}) <= 8
    assert len(set(catalog.product_id.tolist())) == 500 and catalog.product_id.max() < 2**32
    assert 0.0 < 1 - catalog.active.mean() < 0.1
    assert len(gd.build_catalog(20, 1, 0, gd.DAY).category_names) == 5


@pytest.mark.parametrize("table", [EVENTS, PRODUCTS, PROFILES], ids=lambda t: t.name)
def test_every_jsonl_row_passes_the_contract(landing_jsonl, table):
    """Each generated row validates against its landing table, as of the window's end."""
    out, counts = landing_jsonl
    rows = _jsonl_rows(out / table.name)
    assert rows and all(list(row) == table.names for row in rows)
    for row in rows:
        typed, reason = validate_record(table, row, WINDOW_END)
        assert reason is None, (row, reason)
    if table is PROFILES:
        assert 0.8 * SMALL["users"] < len(rows) < SMALL["users"] == counts["users"]


def test_jsonl_types(landing_jsonl):
    """JSON values carry native types: ints, floats, booleans, lists, objects, ISO-Z strings."""
    out, _ = landing_jsonl
    event = _jsonl_rows(out / "events")[0]
    assert isinstance(event["user_id"], int) and event["timestamp"].endswith("Z")
    assert datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")) >= datetime(2026, 10, 1, tzinfo=timezone.utc)
    product = _jsonl_rows(out / "products")[0]
    assert isinstance(product["price"], float) and isinstance(product["active"], bool)
    assert set(product["other_features"]) >= {"brand", "added_at"}
    profile = _jsonl_rows(out / "profiles")[0]
    assert isinstance(profile["view_history"], list)
    assert set(profile["other_features"]) == {"age_band", "country", "device", "signup_date"}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_hold_the_same_rows(tmp_path: Path, landing_jsonl, fmt: str):
    """CSV (nested columns as JSON strings) and Parquet (native types) carry the jsonl rows."""
    jsonl_out, _ = landing_jsonl
    gd.generate(tmp_path, fmt=fmt, **SMALL)
    for name, table in LANDING_TABLES.items():
        expected = _jsonl_rows(jsonl_out / name)
        files = sorted((tmp_path / name).glob(f"*.{fmt}"))
        if fmt == "parquet":
            rows = [row for p in files for row in pq.read_table(p).to_pylist()]
            for row in rows:
                if "other_features" in row:
                    row["other_features"] = dict(row["other_features"])
            assert pq.read_schema(files[0]).names == table.names
        else:
            rows = []
            for p in files:
                with open(p, newline="") as fh:
                    reader = csv.DictReader(fh)
                    assert reader.fieldnames == table.names
                    rows += list(reader)
            for row in rows:
                if "price" in row:  # Arrow writes 18.0 as 18
                    row["price"] = float(row["price"])
            expected = [{k: _csv_text(v) for k, v in row.items()} for row in expected]
        assert rows == expected


def _csv_text(value):
    if value is None:  # an empty CSV field
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def test_help_and_bad_arguments(capsys):
    """--help describes the options; a non-positive count is refused."""
    with pytest.raises(SystemExit) as exc:
        gd.parse_args(["--help"])
    assert exc.value.code == 0
    assert "--events" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        gd.parse_args(["--users", "0"])
    with pytest.raises(ValueError, match="format"):
        gd.generate("unused", fmt="xml")


def test_readme_example_users_exist_in_the_demo_data(tmp_path):
    """Every user in a README example request is in the data `make demo` and `make airflow`
    generate (5,000 users, 200,000 events, seed 42), with enough events to have lists of their own."""
    import re
    from collections import Counter

    from schemas.settings import PROJECT_ROOT

    examples = {int(u) for u in re.findall(r"/v1/users/(\d+)/recommendations", (PROJECT_ROOT / "README.md").read_text())}
    assert examples
    gd.generate(tmp_path / "landing", users=5000, products=1000, events=200_000, seed=42, start="2026-10-01", days=30)
    events = Counter(json.loads(line)["user_id"] for path in sorted((tmp_path / "landing" / "events").glob("*.jsonl"))
                     for line in path.open())
    for user in examples:
        assert events[user] >= 20, (user, events[user])
