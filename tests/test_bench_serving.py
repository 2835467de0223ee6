"""bench/serving's synthetic snapshot: the production layout, readable by the server
(the benchmark's figures mean nothing if the server reads a different shape), and its
list-decode comparison of the two record layouts."""
from __future__ import annotations

import gc

import pytest

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


def test_decode_benchmark_compares_the_same_list_in_both_layouts():
    """The baseline record is a real layout-1 list: both decode to the same ids, the
    scores within layout 2's precision, and each row reports both layouts."""
    from bench.serving.decode import layout_1_record, run
    from schemas.snapshot import SCORE_RELATIVE_ERROR, pack_ranked_list, unpack_ranked_list

    ids, scores = [5, 9, 2], [3.0, 0.7, 0.1]
    old, new = unpack_ranked_list(layout_1_record(ids, scores)), unpack_ranked_list(pack_ranked_list(ids, scores))
    assert old[0] == new[0] == tuple(ids)
    assert new[1] == pytest.approx(old[1], rel=SCORE_RELATIVE_ERROR)
    rows = run(items=30, ks=[10], calls=20, rounds=1)
    assert [(r["k"], r["record_bytes"]) for r in rows] == [(10, {1: 4 + 8 * 30, 2: 8 + 6 * 30})]
    assert rows[0]["layout_1_us"] > 0 and rows[0]["layout_2_us"] > 0


def test_plain_lookup_answers_the_users_first_list(tmp_path, monkeypatch):
    """The plain reference reads the list the lookup server would read first, so the
    gap between the two is the server's work around the read, not another answer."""
    from bench.serving.plain_app import K, create_app

    write_snapshot(tmp_path, "bench", users=50, products=200, list_length=30)
    ids, scores = open_snapshot(tmp_path / "bench").user_list("hybrid", 7, K)
    gc.collect()  # the reader closes its environment: LMDB opens a file once per process
    monkeypatch.setenv("BENCH_SNAPSHOT", str(tmp_path / "bench"))
    client = create_app().test_client()
    body = client.get("/v1/users/7/recommendations").get_json()
    assert [item["product_id"] for item in body["items"]] == list(ids) and len(ids) == K
    assert [item["score"] for item in body["items"]] == pytest.approx(scores)
    assert client.get("/v1/users/99/recommendations").get_json()["items"] == []
