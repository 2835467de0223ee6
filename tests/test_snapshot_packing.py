"""Records packed from Arrow columns (``jobs.snapshot_packing``) and the writer's
in-order appends: byte for byte what the record-by-record layout functions give."""
from __future__ import annotations

import lmdb
import numpy as np
import pyarrow as pa
import pytest

from jobs.snapshot_packing import Records, product_records, ranked_list_records, user_records
from jobs.snapshot_writer import SnapshotWriter
from schemas.snapshot import (
    Manifest, SnapshotFormatError, pack_product, pack_ranked_list, pack_user, product_key, subject_key, user_key,
)


def lists(kind, rows, slice_rows=3) -> list[Records]:
    """``rows`` of (subject, ids, scores) through ``ranked_list_records``, in small slices."""
    subjects, ids, scores = zip(*rows) if rows else ((), (), ())
    return list(ranked_list_records(kind, pa.array(subjects, pa.string()), pa.array(ids, pa.list_(pa.int64())),
                                    pa.array(scores, pa.list_(pa.float32())), slice_rows=slice_rows))


def flat(slices: list[Records]) -> list[tuple[bytes, bytes]]:
    return [pair for records in slices for pair in zip(records.keys, records.values)]


def expected(kind, rows) -> list[tuple[bytes, bytes]]:
    return sorted((subject_key(kind, s), pack_ranked_list(ids, scores)) for s, ids, scores in rows)


def random_lists(rng, users, equal_lengths):
    rows = []
    for u in rng.permutation(users * 4)[:users]:
        n = 5 if equal_lengths else int(rng.integers(0, 9))
        rows.append((str(u), rng.integers(0, 2**32, n).tolist(),
                     sorted(rng.random(n).astype(np.float32).tolist(), reverse=True)))
    return rows


@pytest.mark.parametrize("equal_lengths", [True, False], ids=["top-n block", "ragged lists"])
@pytest.mark.parametrize("kind", ["user", "product"])
def test_vectorised_lists_equal_record_by_record_packing(kind, equal_lengths):
    """Subjects in any order, empty and full-range ids, non-finite, zero and wide-ranging
    scores, sliced: the same bytes, in key order."""
    rows = random_lists(np.random.default_rng(7), 60, equal_lengths)
    rows += [(str(10**6 + 1), [1, 2, 3], [float("inf"), 2.0, float("nan")]), (str(10**6 + 2), [4, 5, 6], [0.0] * 3),
             (str(10**6 + 3), [7, 8, 9], [3e6, 70_000.0, 1e-7])]  # the scale's edge cases
    if kind == "user":
        rows.append(("18446744073709551", [0, 2**32 - 1], [1.5, -0.5]))
    got = lists(kind, rows, slice_rows=7)
    assert [len(r) for r in got] == [7] * (len(rows) // 7) + ([len(rows) % 7] if len(rows) % 7 else [])
    assert flat(got) == expected(kind, rows)


def test_string_keys_are_packed_record_by_record_in_byte_order():
    rows = [("bücher", [3], [1.0]), ("a.b", [1, 2], [2.0, 1.0]), ("Z", [], [])]
    assert flat(lists("category", rows)) == expected("category", rows)
    assert [k for k, _ in flat(lists("global", [("all", [2, 1], [2.0, 1.0])]))] == [b"all"]


@pytest.mark.parametrize("kind", ["user", "category"])
def test_a_repeated_subject_keeps_its_last_list(kind):
    """As a second put would: one record per key, the later row's list."""
    got = flat(lists(kind, [("5", [1], [1.0]), ("3", [2], [1.0]), ("5", [9, 8], [2.0, 1.0])]))
    assert got == [(subject_key(kind, "3"), pack_ranked_list([2], [1.0])),
                   (subject_key(kind, "5"), pack_ranked_list([9, 8], [2.0, 1.0]))]


@pytest.mark.parametrize("ids, scores", [([1, 2], [1.0]), ([-1], [1.0]), ([2**32], [1.0]), ([1], [None]),
                                         (None, [1.0])])
def test_malformed_lists_still_raise(ids, scores):
    with pytest.raises(SnapshotFormatError):
        lists("user", [("1", [5], [1.0]), ("2", ids, scores)])


def test_a_non_decimal_user_id_raises():
    with pytest.raises(ValueError):
        lists("user", [("1", [5], [1.0]), ("x", [6], [1.0])])


def test_products_and_users_in_key_order():
    products = list(product_records(pa.array([30, 2, 7]), pa.array(["a", "bücher", "c"]),
                                    pa.array([1.5, None, float("nan")]), pa.array([True, False, True]),
                                    slice_rows=2))
    assert flat(products) == [(product_key(2), pack_product("bücher", None, False)),
                              (product_key(7), pack_product("c", None, True)),
                              (product_key(30), pack_product("a", 1.5, True))]
    users = list(user_records(pa.array([9, 7]), pa.array(["new", "heavy"]), pa.array([None, "country=DE"])))
    assert flat(users) == [(user_key(7), pack_user("heavy", "country=DE")), (user_key(9), pack_user("new", None))]


def finished(writer: SnapshotWriter) -> tuple[dict[str, int], list[tuple[bytes, bytes]]]:
    """Finish ``writer``'s snapshot; its manifest's row counts and database ``x``'s records in order."""
    manifest = Manifest(version=writer.version, created_at="t", as_of="t", delta_versions={}, model_versions={},
                        config_digest="0")
    env = lmdb.open(str(writer.finish(manifest)), readonly=True, lock=False, max_dbs=4)
    with env.begin(db=env.open_db(b"x")) as txn:
        records = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    env.close()
    return manifest.databases, records


def test_writer_appends_sorted_records_and_falls_back_to_puts(tmp_path):
    """A slice above the greatest key is appended in one go; one that is not still lands
    (through put), replacing repeated keys; the manifest counts each key once."""
    with SnapshotWriter(tmp_path, "v1", 1 << 26) as writer:
        writer.append_sorted("x", [b"b", b"d"], [b"1", b"2"])
        writer.append_sorted("x", [b"e", b"f"], [b"6", b"7"])
        writer.append_sorted("x", [b"a", b"d"], [b"3", b"4"])
        counts, records = finished(writer)
    assert counts == {"x": 5}
    assert records == [(b"a", b"3"), (b"b", b"1"), (b"d", b"4"), (b"e", b"6"), (b"f", b"7")]


def test_writer_appends_in_key_order_and_still_replaces(tmp_path):
    """In-order keys take the append path; a key below the greatest one, new or repeated,
    goes through an ordinary put; the manifest counts each key once."""
    with SnapshotWriter(tmp_path, "v1", 1 << 26) as writer:
        for key, value in ((b"b", b"1"), (b"d", b"2"), (b"a", b"3"), (b"d", b"4"), (b"c", b"5"), (b"e", b"6")):
            writer.put("x", key, value)
        counts, records = finished(writer)
    assert counts == {"x": 5}
    assert records == [(b"a", b"3"), (b"b", b"1"), (b"c", b"5"), (b"d", b"4"), (b"e", b"6")]
