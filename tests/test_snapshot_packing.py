"""The builder's vectorised list packing and chunked records, and the writer's
in-order appends: byte for byte what the record-by-record path gives."""
from __future__ import annotations

import lmdb
import numpy as np
import pyarrow as pa
import pytest

from jobs.build_snapshot import _pack_candidates, unchunk
from jobs.snapshot_writer import SnapshotWriter
from schemas.snapshot import Manifest, SnapshotFormatError, pack_ranked_list, recs_db_name, subject_key

LIST_SCHEMA = pa.schema([("subject_kind", pa.string()), ("subject_id", pa.string()), ("algorithm", pa.string()),
                         ("product_ids", pa.list_(pa.int64())), ("scores", pa.list_(pa.float32()))])


def packed(rows, offset=0) -> dict[tuple[str, bytes], bytes]:
    batch = pa.RecordBatch.from_pylist([dict(zip(LIST_SCHEMA.names, r)) for r in rows], schema=LIST_SCHEMA)
    records = {}
    for out in _pack_candidates(iter([batch.slice(offset)])):
        for chunk in out.to_pylist():
            for key, value in unchunk(chunk):
                records[(chunk["db"], key)] = value
    return records


def expected(rows) -> dict[tuple[str, bytes], bytes]:
    return {(recs_db_name(kind, algorithm), subject_key(kind, subject)): pack_ranked_list(ids, scores)
            for kind, subject, algorithm, ids, scores in rows}


def test_vectorised_lists_equal_record_by_record_packing():
    """Users in any order, empty and full-range lists, several kinds and algorithms in one batch."""
    rng = np.random.default_rng(7)
    rows = [("user", str(u), "als", rng.integers(0, 2**32, int(rng.integers(0, 9))).tolist(), [])
            for u in rng.permutation(200)[:60]]
    rows = [(k, s, a, ids, sorted(rng.random(len(ids)).astype(np.float32).tolist(), reverse=True))
            for k, s, a, ids, _ in rows]
    rows += [("user", "18446744073709551", "content", [0, 2**32 - 1], [1.5, -0.5]),
             ("product", "12", "als", [1, 2], [0.5, 0.25]), ("category", "bücher", "als", [3], [1.0]),
             ("global", "all", "popular", [2, 1], [2.0, 1.0])]
    assert packed(rows, offset=1) == expected(rows[1:])  # a sliced batch, as Arrow hands them over


def test_user_lists_come_out_in_key_order():
    rows = [("user", str(u), "als", [u], [1.0]) for u in (300, 5, 70000, 6)]
    keys = [key for (_, key) in packed(rows)]
    assert keys == sorted(keys)


@pytest.mark.parametrize("ids, scores", [([1, 2], [1.0]), ([-1], [1.0]), ([2**32], [1.0]), ([1], [None])])
def test_malformed_lists_still_raise(ids, scores):
    with pytest.raises(SnapshotFormatError):
        packed([("user", "1", "als", [5], [1.0]), ("user", "2", "als", ids, scores)])


def test_writer_appends_in_key_order_and_still_replaces(tmp_path):
    """In-order keys take the append path; a key below the greatest one, new or repeated,
    goes through an ordinary put; the manifest counts each key once."""
    with SnapshotWriter(tmp_path, "v1", 1 << 26) as writer:
        for key, value in ((b"b", b"1"), (b"d", b"2"), (b"a", b"3"), (b"d", b"4"), (b"c", b"5"), (b"e", b"6")):
            writer.put("x", key, value)
        manifest = Manifest(version="v1", created_at="t", as_of="t", delta_versions={}, model_versions={},
                            config_digest="0")
        final = writer.finish(manifest)
    assert manifest.databases == {"x": 5}
    env = lmdb.open(str(final), readonly=True, lock=False, max_dbs=4)
    with env.begin(db=env.open_db(b"x")) as txn:
        assert [(bytes(k), bytes(v)) for k, v in txn.cursor()] == [
            (b"a", b"3"), (b"b", b"1"), (b"c", b"5"), (b"d", b"4"), (b"e", b"6")]
    env.close()
