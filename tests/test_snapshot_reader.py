"""SnapshotReader lookups on the fixture snapshot (tests/lookup_fixtures.py), directly."""
from __future__ import annotations

import pytest

from lookup_server.catalog_index import CatalogIndex
from lookup_server.recommend import recommend_for_user
from lookup_server.snapshot_reader import UserLookup, open_snapshot
from schemas.snapshot import UserRecord, pack_product, product_key

from tests.lookup_fixtures import SnapshotContent, build_snapshot


@pytest.fixture
def reader(tmp_path):
    return open_snapshot(build_snapshot(tmp_path, "v1"))


def test_user_lookup_gives_the_record_and_the_algorithms_listing_the_user(reader):
    assert reader.user_lookup(2) == UserLookup(UserRecord(2, "light", None), frozenset({"als", "popular"}))
    assert reader.user_lookup(1) == UserLookup(UserRecord(1, "heavy", "country=DE"), frozenset({"popular"}))
    assert reader.user_lookup(5) == UserLookup(UserRecord(5, "new", "country=DE"), frozenset())
    assert reader.user_lookup(778) == UserLookup(None, frozenset())


def test_inactive_products_are_skipped_only_when_asked(reader):
    """Product 13 is inactive: active_only leaves it out and still fills k."""
    assert reader.user_list("popular", 1, 4)[0] == (10, 11, 12, 13)
    assert reader.user_list("popular", 1, 4, active_only=True)[0] == (10, 11, 12, 14)
    assert reader.global_list("popular", 3, active_only=True, exclude=frozenset({20}))[0] == (10, 21, 11)


def test_an_all_active_catalog_reads_lists_straight(tmp_path):
    content = SnapshotContent()
    content.products = {p: (c, price, True) for p, (c, price, _) in content.products.items()}
    reader = open_snapshot(build_snapshot(tmp_path, "v2", content))
    assert reader.user_list("popular", 1, 4, active_only=True)[0] == (10, 11, 12, 13)


def test_users_and_segment_lists(reader):
    assert reader.user(5) == UserRecord(5, "new", "country=DE")
    assert reader.user(2) == UserRecord(2, "light", None)
    assert reader.user(778) is None
    assert reader.segment_list("popular", "country=DE", 2, active_only=True)[0] == (31, 30)
    assert reader.segment_list("popular", "country=FR", 2) is None


def test_categories_of_catalogued_products(reader):
    """99 has no product record; 13 is inactive but still has its category."""
    assert reader.categories([10, 15, 13, 99]) == {"shoes", "hats"}
    assert reader.categories([]) == set()


def test_active_in_catalog_keeps_order_and_drops_unknown_and_inactive(reader):
    assert reader.active_in_catalog([21, 99, 13, 10]) == [21, 10]


def test_a_user_lookup_changes_no_answer_only_what_is_read(reader):
    """recommend_for_user with the reader's user_lookup answers as it does without
    one, for users with lists, with only a segment list, and unknown ones."""
    for user in (1, 2, 5, 778):
        for algorithms in (("als", "popular"), ("als",), ("hybrid", "als"), ()):
            without = recommend_for_user(reader, user, 3, algorithms)
            assert recommend_for_user(reader, user, 3, algorithms, reader.user_lookup(user)) == without


def test_catalog_index_finds_categories_by_binary_search():
    """Ids in key order with gaps, a repeated category, one product without a
    category and one inactive: lookups hit only catalogued ids."""
    records = [(product_key(p), pack_product(category, None, active))
               for p, category, active in ((3, "hats", True), (70, "", True), (900, "shoes", False),
                                           (2**32 - 1, "hats", True))]
    index = CatalogIndex(records)
    assert len(index) == 4 and index.inactive == {900}
    assert index.category_names([2**32 - 1, 4, 900, 70, 3]) == {"hats", "shoes"}
    assert index.category_names([0, 69, 71, 899]) == set()
    assert [p in index for p in (0, 3, 70, 71, 900, 2**32 - 1)] == [False, True, True, False, True, True]
    assert CatalogIndex(()).category_names([1]) == set() and 1 not in CatalogIndex(())
