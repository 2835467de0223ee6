"""bench/serving's synthetic snapshot: the production layout, readable by the server
(the benchmark's figures mean nothing if the server reads a different shape)."""
from __future__ import annotations

from lookup_server.snapshot_reader import open_snapshot
from schemas.snapshot import read_current_version

from bench.serving.synthetic import ALGORITHMS, SEGMENTS, write_snapshot


def test_synthetic_snapshot_has_every_list_the_server_reads(tmp_path):
    info = write_snapshot(tmp_path, "bench", users=300, products=500, list_length=20)
    assert read_current_version(tmp_path) == "bench" and info["bytes"] > 0
    reader = open_snapshot(tmp_path / "bench")
    for user in (0, 299):
        assert reader.user_lookup(user).algorithms == set(ALGORITHMS)
        ids, scores = reader.user_list("hybrid", user, 20)
        assert len(set(ids)) == 20 and all(0 <= p < 500 for p in ids) and list(scores) == sorted(scores, reverse=True)
        assert reader.user(user).profile_segment in SEGMENTS
    assert reader.user_list("hybrid", 300, 5) is None
    assert len(reader.product_list("als", 7, 50)[0]) == 50 and reader.product(7).active
    assert reader.global_list("popular", 200) is not None
    assert reader.segment_list("popular", SEGMENTS[0], 5) is not None
