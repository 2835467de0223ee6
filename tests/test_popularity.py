"""Popularity candidates on a handful of hand-made events.

Catalog: category a = products 1, 2, 3 (3 inactive); b = 4, 5; c = 6, 7; d = 8;
product 9 is not in the catalog. Weights: view 1, add_to_cart 4, purchase 8
(remove_from_cart unlisted, so 0); half-life 7 days. Event weights by hand:

    user 1  view 1 at as_of                  1.0
            view 2, 7 days old               0.5
            purchase 2, 1 hour after as_of   ignored
    user 2  purchase 4, 14 days old          8 * 0.25 = 2.0
            add_to_cart 5, 7 days old        4 * 0.5  = 2.0
    user 3  view 3 (inactive) at as_of       1.0     (category a)
            view 6, 14 days old              0.25    (category c)
            view 8, 28 days old              0.0625  (category d)
            remove_from_cart 7 at as_of      0
    user 4  view 9, 28 days old              0.0625  (no category)
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from jobs.popularity import PopularityParams
from schemas import EVENTS_STORED, PRODUCTS_STORED, PROFILES_STORED, spark_schema
from schemas.tables import USER_SEGMENTS
from tests.candidate_contract import assert_candidate_rows, assert_candidates_contract, assert_candidates_schema

AS_OF = datetime(2026, 10, 1, tzinfo=timezone.utc)
WEIGHTS = {"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0}
PARAMS = PopularityParams(top_n=10, user_top_n=10, user_top_categories=2, half_life_days=7.0,
                          exclude_purchased=True, event_weights=WEIGHTS)
CAPPED = PopularityParams(top_n=1, user_top_n=2, user_top_categories=2, half_life_days=7.0,
                          exclude_purchased=False, event_weights=WEIGHTS)

EVENT_ROWS = [  # (user, type, product, age)
    (1, "view", 1, timedelta(0)),
    (1, "view", 2, timedelta(days=7)),
    (1, "purchase", 2, -timedelta(hours=1)),
    (2, "purchase", 4, timedelta(days=14)),
    (2, "add_to_cart", 5, timedelta(days=7)),
    (3, "view", 3, timedelta(0)),
    (3, "view", 6, timedelta(days=14)),
    (3, "view", 8, timedelta(days=28)),
    (3, "remove_from_cart", 7, timedelta(0)),
    (4, "view", 9, timedelta(days=28)),
]
PRODUCT_ROWS = [(1, "a", True), (2, "a", True), (3, "a", False), (4, "b", True), (5, "b", True),
                (6, "c", True), (7, "c", True), (8, "d", True)]


@pytest.fixture(scope="module")
def inputs(spark):
    """(events, products) DataFrames in the stored tables' schemas."""
    events = spark.createDataFrame(
        [(u, t, p, AS_OF - age, f"{AS_OF - age:%Y-%m-%d}", "test:0") for u, t, p, age in EVENT_ROWS],
        spark_schema(EVENTS_STORED))
    products = spark.createDataFrame(
        [(p, c, 10.0, active, None, None, AS_OF) for p, c, active in PRODUCT_ROWS], spark_schema(PRODUCTS_STORED))
    return events, products


def _candidates(inputs, params):
    from jobs.popularity import popularity_candidates

    events, products = inputs
    return popularity_candidates(events.select("user_id", "product_id", "event_type", "timestamp"), products, AS_OF, params)


def _by_subject(rows) -> dict:
    return {(r["subject_kind"], r["subject_id"]): (list(r["product_ids"]), list(r["scores"])) for r in rows}


@pytest.fixture(scope="module")
def run(inputs):
    """(DataFrame, collected rows) of the PARAMS run: one Spark action serves every test."""
    df = _candidates(inputs, PARAMS)
    return df, df.collect()


@pytest.fixture(scope="module")
def lists(run):
    """{(subject_kind, subject_id): (product_ids, scores)} of the PARAMS run."""
    return _by_subject(run[1])


def _assert_list(actual, ids, scores):
    assert actual[0] == ids
    assert actual[1] == pytest.approx(scores, rel=1e-6)


@pytest.mark.spark
def test_time_decay_halves_weight_each_half_life(lists):
    """A view one half-life old scores exactly half a view at as_of."""
    ids, scores = lists[("global", "all")]
    score = dict(zip(ids, scores))
    assert score[1] == pytest.approx(1.0)
    assert score[2] == pytest.approx(score[1] / 2)
    assert score[8] == pytest.approx(score[1] / 16)


@pytest.mark.spark
def test_event_type_weights(lists):
    """Purchase (8) and add_to_cart (4) weigh by type; an unlisted type weighs nothing."""
    score = dict(zip(*lists[("global", "all")]))
    assert score[4] == pytest.approx(8.0 * 0.25)
    assert score[5] == pytest.approx(4.0 * 0.5)
    assert all(7 not in ids for ids, _ in lists.values())


@pytest.mark.spark
def test_global_list_ties_break_on_smaller_id(lists):
    """The global list ranks every active product with weight, ties by smaller id, uncatalogued ones too."""
    _assert_list(lists[("global", "all")], [4, 5, 1, 2, 6, 8, 9], [2.0, 2.0, 1.0, 0.5, 0.25, 0.0625, 0.0625])


@pytest.mark.spark
def test_events_after_as_of_are_ignored(lists):
    """User 1's purchase of 2 an hour after as_of neither scores nor excludes it."""
    assert dict(zip(*lists[("global", "all")]))[2] == pytest.approx(0.5)
    _assert_list(lists[("user", "1")], [1, 2], [1.0, 0.5])


@pytest.mark.spark
def test_inactive_products_are_excluded(lists):
    """Product 3 has the top score of category a but is inactive: no list holds it."""
    assert all(3 not in ids for ids, _ in lists.values())


@pytest.mark.spark
def test_category_lists_hold_only_their_category(lists):
    """One list per catalog category with weight, each holding only its own active products."""
    categories = {subject: value for (kind, subject), value in lists.items() if kind == "category"}
    assert sorted(categories) == ["a", "b", "c", "d"]
    _assert_list(categories["a"], [1, 2], [1.0, 0.5])
    _assert_list(categories["b"], [4, 5], [2.0, 2.0])
    _assert_list(categories["c"], [6], [0.25])
    _assert_list(categories["d"], [8], [0.0625])


@pytest.mark.spark
def test_user_lists_draw_from_top_categories(lists):
    """User 3's top two categories a (0.8 of activity) and c (0.2) fill the list; d, third, does not."""
    _assert_list(lists[("user", "3")], [1, 2, 6], [0.8 * 1.0, 0.8 * 0.5, 0.2 * 1.0])


@pytest.mark.spark
def test_user_lists_exclude_purchased(lists):
    """User 2 bought 4, so their list from category b holds only 5; user 4 (no catalogued product) gets none."""
    _assert_list(lists[("user", "2")], [5], [1.0])
    assert sorted(subject for kind, subject in lists if kind == "user") == ["1", "2", "3"]


@pytest.mark.spark
def test_lists_capped_at_top_n_and_user_top_n(inputs):
    """top_n=1 cuts global and category lists to one, user_top_n=2 cuts user lists; purchases kept when asked."""
    capped = _by_subject(assert_candidates_contract(_candidates(inputs, CAPPED)))
    assert {key: ids for key, (ids, _) in capped.items()} == {
        ("global", "all"): [4],
        ("category", "a"): [1], ("category", "b"): [4], ("category", "c"): [6], ("category", "d"): [8],
        ("user", "1"): [1, 2], ("user", "2"): [4, 5], ("user", "3"): [1, 2],
    }


@pytest.mark.spark
def test_popularity_honours_the_candidates_contract(run):
    """The output has the CANDIDATES schema and well-formed lists, labelled with algorithm and version."""
    df, rows = run
    assert_candidates_schema(df.schema)
    assert_candidate_rows(rows)
    assert len(rows) == 1 + 4 + 3
    assert {r["algorithm"] for r in rows} == {"popular"}
    assert {r["model_version"][:len("popular-20261001T000000Z-")] for r in rows} == {"popular-20261001T000000Z-"}


# --- profile segments and activity (jobs.segments) ------------------------------

SEGMENTED = PopularityParams(top_n=10, user_top_n=10, user_top_categories=2, half_life_days=7.0,
                             event_weights=WEIGHTS, segment_features=("country", "age_band"),
                             segment_min_users=2, light_max_interactions=2)
PROFILE_FEATURES = {  # user 5 has a profile and no events; user 3 lacks an age band; user 4 no profile
    1: {"country": "DE", "age_band": "adult"}, 2: {"country": "DE", "age_band": "adult", "device": "ios"},
    3: {"country": "FR"}, 5: {"country": "DE", "age_band": "adult"},
}


@pytest.fixture(scope="module")
def segmented(spark, inputs):
    """(user_segments rows by user, candidates by subject) of the SEGMENTED run."""
    from jobs.popularity import popularity_candidates
    from jobs.segments import user_segments

    events, products = inputs
    profiles = spark.createDataFrame([(u, [], [], features, AS_OF) for u, features in PROFILE_FEATURES.items()],
                                     spark_schema(PROFILES_STORED))
    rows = events.select("user_id", "product_id", "event_type", "timestamp")
    segments = user_segments(rows, profiles, AS_OF, SEGMENTED.segment_features, SEGMENTED.light_max_interactions)
    assert segments.columns == USER_SEGMENTS.names
    candidates = assert_candidates_contract(popularity_candidates(rows, products, AS_OF, SEGMENTED, segments))
    return {r["user_id"]: (r["activity"], r["profile_segment"]) for r in segments.collect()}, _by_subject(candidates)


@pytest.mark.spark
def test_user_segments_label_activity_and_profile(segmented):
    """Interactions up to as-of (user 1's later purchase does not count): 2 -> light,
    4 -> heavy, none -> new; a missing feature is '?'; no profile, no segment."""
    users, _ = segmented
    assert users == {
        1: ("light", "country=DE|age_band=adult"), 2: ("light", "country=DE|age_band=adult"),
        3: ("heavy", "country=FR|age_band=?"), 4: ("light", None), 5: ("new", "country=DE|age_band=adult"),
    }


@pytest.mark.spark
def test_segment_lists_rank_what_the_segments_users_engaged_with(segmented, lists):
    """DE/adult: users 1 and 2 (5 has no events). Active products only, decayed weights
    summed: 4 and 5 at 2.0 (the smaller id first), 1 at 1.0, 2 at 0.5. FR has one active
    user, below segment_min_users: no list."""
    segment_lists = {subject: value for (kind, subject), value in segmented[1].items() if kind == "segment"}
    assert list(segment_lists) == ["country=DE|age_band=adult"]
    _assert_list(segment_lists["country=DE|age_band=adult"], [4, 5, 1, 2], [2.0, 2.0, 1.0, 0.5])
    # The other lists are those of a run without segments.
    assert {key: value for key, value in segmented[1].items() if key[0] != "segment"} == lists


def _row(**changes) -> dict:
    return {"subject_kind": "user", "subject_id": "1", "algorithm": "popular", "model_version": "v",
            "product_ids": [3, 1], "scores": [0.9, 0.1], **changes}


@pytest.mark.parametrize("bad", [
    _row(subject_kind="shop"),
    _row(subject_id="abc"),
    _row(subject_kind="global", subject_id="everyone"),
    _row(product_ids=[3, 3]),
    _row(product_ids=[3]),
    _row(product_ids=[3, 2**32]),
    _row(scores=[0.1, 0.9]),
    _row(scores=[float("nan"), 0.1]),
], ids=["kind", "user-id", "global-id", "repeated-id", "lengths", "id-range", "increasing", "nan"])
def test_contract_rejects_malformed_lists(bad):
    """The contract check fails on each kind of malformed list."""
    with pytest.raises(AssertionError):
        assert_candidate_rows([bad])


def test_contract_rejects_repeated_subjects():
    """Two lists for one (subject, algorithm) break the contract; one passes it."""
    assert_candidate_rows([_row()])
    with pytest.raises(AssertionError, match="listed twice"):
        assert_candidate_rows([_row(), _row()])


@pytest.mark.parametrize("bad", [
    {"top_n": 0}, {"user_top_n": 0}, {"user_top_categories": 0}, {"segment_min_users": 0}, {"half_life_days": 0.0},
    {"half_life_days": -1.0}, {"half_life_days": float("nan")},
    {"event_weights": {"purchse": 8.0}}, {"event_weights": {"view": -1.0}},
])
def test_params_reject_bad_values(bad):
    """Non-positive sizes or half-life, unknown event types and negative weights raise ValueError."""
    with pytest.raises(ValueError):
        PopularityParams(**bad)


def test_shipped_conf_agrees_with_the_evaluation_on_activity_segments():
    """The server's bandit reads the evaluation's light/heavy priors for the users the
    popularity job labels light/heavy: both must draw the line at the same count."""
    from schemas.settings import load_conf

    settings = load_conf("jobs")
    assert settings["popularity"]["light_max_interactions"] == settings["evaluation"]["light_max_interactions"]
    assert PopularityParams(**settings["popularity"]).segment_features == ("country", "age_band")


def test_favourite_category_lists_equal_the_join_formulation(spark):
    """The NumPy ranking gives the lists the Spark join + top_n_lists gave: same ids,
    same float scores, ties to the smaller id, bought products out, no empty lists."""
    import random

    from pyspark.sql import functions as F

    from jobs.candidates import top_n_lists
    from jobs.popularity import favourite_category_lists

    draw = random.Random(3)
    categories = [f"c{i}" for i in range(6)]
    top = [(c, p, draw.choice([1.0, 0.5, 0.25, 0.125])) for i, c in enumerate(categories[:5])
           for p in range(i * 100, i * 100 + draw.randint(1, 12))]  # c5 has no list
    shares = [(u, c, draw.choice([0.2, 0.3, 0.5])) for u in range(1, 80) for c in draw.sample(categories, 3)]
    shares += [(500, "c5", 1.0), (501, "c0", 1.0)]
    bought = [(u, p) for u in range(1, 80) for _, p, _ in draw.sample(top, 4)]
    bought += [(501, p) for c, p, _ in top if c == "c0"]  # 501 bought all of its only category
    top_frame = spark.createDataFrame(top, "category string, product_id long, relative double")
    share_frame = spark.createDataFrame(shares, "user_id long, category string, share double")
    bought_frame = spark.createDataFrame(bought, "user_id long, product_id long")

    joined = (share_frame.join(top_frame, "category")
              .select("user_id", "product_id", (F.col("share") * F.col("relative")).alias("score"))
              .join(bought_frame, ["user_id", "product_id"], "left_anti"))

    def by_user(lists):
        return {r.subject_id: (list(r.product_ids), list(r.scores)) for r in lists.collect()}

    expected = by_user(top_n_lists(joined, F.col("user_id"), 7))
    got = by_user(favourite_category_lists(share_frame, top_frame, bought_frame, 7))
    assert "500" not in got and "501" not in got
    assert got == expected and len(got) == 79
    without_bought = by_user(favourite_category_lists(share_frame, top_frame, None, 7))
    assert without_bought["501"][0] == [p for _, p in sorted((-r, p) for c, p, r in top if c == "c0")][:7]
