"""bench.snapshot_build.lake_ab's accounting: which databases count as users'
lists, and the per-builder summary its report compares (the builds themselves are
the real builder's, run by the benchmark, not here)."""
from __future__ import annotations

from bench.snapshot_build.lake_ab import listed_users_and_algorithms, markdown, summarise


def test_bytes_are_counted_over_the_user_list_databases_only():
    databases = {"recs/user/als": 900, "recs/user/hybrid": 1000, "recs/product/als": 5000,
                 "recs/global/popular": 1, "products": 5000, "users": 1200}
    assert listed_users_and_algorithms(databases) == (1000, 2)
    assert listed_users_and_algorithms({"products": 10}) == (0, 0)


def test_summary_keeps_each_build_and_compares_medians():
    def build(label, round_, seconds, size):
        return {"round": round_, "builder": label, "commit": "abc" if label == "today" else "def",
                "seconds": seconds, "data_mdb_bytes": size, "users": 1000, "algorithms": 2,
                "bytes_per_user_per_algorithm": size / 2000, "peak_rss_mb": {}}
    builds = [build("today", 1, 60.0, 2_000_000), build("before", 1, 50.0, 3_000_000),
              build("before", 2, 54.0, 3_000_000), build("today", 2, 64.0, 2_000_000)]
    summary = summarise(builds)
    assert summary["today"]["seconds"] == [60.0, 64.0] and summary["today"]["median"] == 62.0
    assert summary["before"]["best"] == 50.0 and summary["before"]["bytes_per_user_per_algorithm"] == 1500
    result = {"compare_with": "def" * 10, "data_dir": "lake", "warmup": 1, "builds": builds, "summary": summary,
              "machine": {"cores": 2, "memory_gb": 24, "load_average": [0.1, 0.1, 0.1]},
              "versions": {"spark": "4.0"}, "git": {"commit": "abc", "dirty": False}, "command": "x"}
    text = markdown(result)
    assert "60.0 / 64.0" in text and "1.19x the time (medians), 0.67x the bytes" in text
