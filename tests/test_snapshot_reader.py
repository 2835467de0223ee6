"""SnapshotReader lookups on the fixture snapshot (tests/lookup_fixtures.py), directly."""
from __future__ import annotations

import pytest

from lookup_server.snapshot_reader import open_snapshot
from schemas.snapshot import UserRecord

from tests.lookup_fixtures import SnapshotContent, build_snapshot


@pytest.fixture
def reader(tmp_path):
    return open_snapshot(build_snapshot(tmp_path, "v1"))


def test_user_algorithms_lists_those_with_a_row_in_the_given_order(reader):
    assert reader.user_algorithms(2, ["hybrid", "als", "popular"]) == ("als", "popular")
    assert reader.user_algorithms(1, ["als", "popular"]) == ("popular",)
    assert reader.user_algorithms(778, ["als", "popular"]) == ()


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
