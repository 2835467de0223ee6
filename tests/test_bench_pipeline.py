"""bench/pipeline's scales, growth fits and report: pure Python, no Spark, no timings asserted."""
from __future__ import annotations

import json

import pytest

from bench import growth
from bench.pipeline.report import dominant, markdown
from bench.pipeline.scales import Scale, label


def test_scales_keep_the_issue_point_ratios():
    assert Scale.of("10M").as_dict() == {"events": 10_000_000, "users": 1_000_000, "products": 100_000}
    assert Scale.of("300k") == Scale("300k", 300_000, 30_000, 3_000)
    assert label(1_500_000) == "1.5M" and label(50_000) == "50k" and label(123) == "123"
    with pytest.raises(ValueError):
        Scale.of("ten")


def test_fit_exponent_recovers_a_power_law():
    sizes = [1e6, 3e6, 1e7]
    assert growth.fit_exponent(sizes, [2 * s ** 1.5 for s in sizes]) == pytest.approx(1.5)
    assert growth.fit_exponent([1e6], [10.0]) is None
    assert growth.fit_exponent([1e6, 1e6], [10.0, 12.0]) is None
    assert growth.fit_exponent([1e6, 3e6], [10.0, 0.0]) is None


def _entry(events: int, seconds: dict, status: str = "complete") -> dict:
    stages = [{"stage": name, "status": "ok", "seconds": s, "peak_rss_mb": {"driver_jvm": 1000.0 + s}}
              for name, s in seconds.items()]
    return {"shape": Scale.of(str(events)).as_dict(), "status": status, "stages": stages,
            "pipeline_seconds": sum(seconds.values()), "reached": stages[-1]["stage"]}


def test_report_names_the_dominant_stage_and_an_unfinished_one():
    done = _entry(1_000_000, {"ingest": 100.0, "als": 300.0})
    cut = _entry(10_000_000, {"ingest": 900.0}, status="running")
    cut["stages"].append({"stage": "popular", "status": "running"})
    assert dominant(done) == ("als", 0.75)
    text = markdown({"scales": {"1M": done, "10M": cut}}, 1800)
    assert "als (75%)" in text and "popular | running (not finished)" in text
    assert "last stage reached" in text


def test_growth_writes_plots_and_states_the_exponent(tmp_path):
    result = {"rules": {"target_seconds": 1800},
              "scales": {"1M": _entry(1_000_000, {"ingest": 100.0}), "3M": _entry(3_000_000, {"ingest": 300.0})}}
    (tmp_path / "pipeline.json").write_text(json.dumps(result))
    serving = {"setup": {"users": 1_000_000}, "half_load": {"p99_ms": 11.0},
               "runs": [{"scenario": "known", "connections": 4, "p50_ms": 2.8, "p99_ms": 5.4, "rps": 1300.0}]}
    (tmp_path / "serving.json").write_text(json.dumps(serving))
    text = growth.write_all(tmp_path)
    assert "| ingest time | 2 | 1.00 | about linear |" in text
    assert "1 snapshot size(s)" in text
    for png in (growth.PIPELINE_PNG, growth.MEMORY_PNG, growth.SERVING_PNG):
        assert (tmp_path / png).stat().st_size > 0


def test_growth_reads_every_serving_size_and_calls_flat_latency_flat(tmp_path):
    """make bench-serving writes serving.json, serving_100k.json and serving_5M.json:
    growth reads them all, and a latency that does not move with users is "flat"."""
    (tmp_path / "pipeline.json").write_text(json.dumps({"scales": {}}))
    for name, users, p50 in (("serving", 1_000_000, 1.0), ("serving_100k", 100_000, 1.0),
                             ("serving_5M", 5_000_000, 1.02)):
        serving = {"setup": {"users": users}, "half_load": {"p99_ms": 3.3},
                   "runs": [{"scenario": "known", "connections": 4, "p50_ms": p50, "p99_ms": 2.4, "rps": 3400.0}]}
        (tmp_path / f"{name}.json").write_text(json.dumps(serving))
    text = growth.write_all(tmp_path)
    assert "| lookup p50 | 3 | 0.00 | flat (about the same at every size) | 100,000: 1.0, 1,000,000: 1.0, " \
           "5,000,000: 1.0 ms |" in text
    assert "snapshot size(s)" not in text


def test_cost_run_without_ease_and_ranked_leaves_them_out_everywhere():
    """The side-by-side run without EASE and the ranker neither evaluates, fuses nor
    re-ranks with them; the rest of the settings are conf's."""
    from bench.pipeline_cost.__main__ import without
    from schemas.settings import load_conf

    conf = load_conf("jobs")
    conf["hybrid"]["weights"] = {"als": 1.0, "ease": 0.5}
    cut = without(conf, ("ease", "ranked"))
    assert "ease" not in cut["evaluation"]["algorithms"] and "ranked" not in cut["evaluation"]["algorithms"]
    assert cut["hybrid"]["weights"] == {"als": 1.0} and "ease" not in cut["ranked"]["generators"]
    assert cut["als"] == conf["als"] and conf["hybrid"]["weights"] == {"als": 1.0, "ease": 0.5}


def test_cost_nights_put_the_reusing_stages_in_place_of_the_first_nights():
    """A reusing night is the first night with its ranked and evaluation times swapped for
    the second pass's; the week's mean weighs one training night against the others."""
    from bench.pipeline_cost.__main__ import night_seconds, ratios, report

    stage = lambda name, seconds: {"stage": name, "seconds": seconds, "status": "ok"}  # noqa: E731
    runs = {"all": {"stages": [stage("ingest", 10.0), stage("ranked", 30.0), stage("evaluation", 20.0)],
                    "reusing": [stage("ranked", 6.0), stage("evaluation", 4.0)], "seconds": 60.0, "failed": []},
            "without": {"stages": [stage("ingest", 10.0), stage("evaluation", 10.0)], "seconds": 20.0, "failed": []}}
    assert night_seconds(runs["all"]) == {"training": 60.0, "reusing": 20.0}
    assert night_seconds(runs["without"]) == {"training": 20.0, "reusing": 20.0}
    ratio = ratios(runs)
    days = ratio["retrain_days"]
    assert ratio["training"] == 3.0 and ratio["reusing"] == 1.0
    assert ratio["mean"] == pytest.approx((3.0 + (days - 1) * 1.0) / days)
    text = report({"scale": {"name": "1M", "events": 1, "users": 1, "products": 1}, "runs": runs, "ratio": ratio,
                   "load_average_start": {}, "environment": {
                       "machine": {"cores": 2, "memory_gb": 1, "load_average": [0.0, 0.0, 0.0]},
                       "versions": {"spark": "4"}, "git": {"commit": "abc", "dirty": False}, "command": "x"}})
    assert "| ranked | 30.0 | 6.0 | - |" in text and "| **pipeline** | **60.0** | **20.0** | **20.0** |" in text


def test_cluster_overhead_counts_the_store_log_by_method():
    """One werkzeug line per request; a status other than 200 comes wrapped in colour codes,
    and scripts/objectstore's own probes are not the pipeline's traffic."""
    from bench.cluster_overhead.services import count_requests, total_requests

    lines = ['127.0.0.1 - - [06/Dec/2026 05:58:04] "GET /moto-api/ HTTP/1.1" 200 -',
             ' * Running on http://127.0.0.1:45001',
             '127.0.0.1 - - [06/Dec/2026 05:58:11] "PUT /b/recsys/x.txt?partNumber=1&uploadId=E HTTP/1.1" 200 -',
             '127.0.0.1 - - [06/Dec/2026 05:58:11] "\x1b[35m\x1b[1mGET /b/recsys/x.txt HTTP/1.1\x1b[0m" 206 -',
             '127.0.0.1 - - [06/Dec/2026 05:58:11] "GET /b?list-type=2&prefix=recsys/ HTTP/1.1" 200 -',
             '127.0.0.1 - - [06/Dec/2026 05:58:11] "\x1b[33mHEAD /b/nope HTTP/1.1\x1b[0m" 404 -']
    counts = count_requests(lines)
    assert counts == {"GET": 2, "HEAD": 1, "PUT": 1, "status_4xx": 1}
    assert total_requests(counts) == 4


def test_cluster_overhead_ratios_and_table():
    """Cluster / local per stage and in total; a stage that failed in either run has no
    ratio and shows its status; the totals leave out the session start and the upload."""
    from bench.cluster_overhead.__main__ import ratios, report

    def stage(name, seconds, status="ok", **extra):
        return {"stage": name, "seconds": seconds, "status": status, "cpu_seconds": 2 * seconds, **extra}

    settings = {"spark.master": "local[2]", "spark.driver.memory": "12g", "spark.executor.memory": None,
                "spark.cores.max": None, "spark.sql.shuffle.partitions": "8", "spark.default.parallelism": "4"}
    contents = {"bytes": 2_000_000, "objects": 10, "folders": {"lake": {"bytes": 2_000_000, "objects": 10}}}
    runs = {"local": {"stages": [stage("ingest", 10.0), stage("als", 20.0)], "seconds": 30.0, "failed": [],
                      "settings": settings, "session_seconds": 3.0, "executors": 0, "data_dir": "/d",
                      "data_dir_contents": contents},
            "cluster": {"stages": [stage("ingest", 25.0, cpu_seconds_executors=40.0, cpu_seconds_store=3.0,
                                         requests={"GET": 5, "HEAD": 7, "PUT": 2, "status_4xx": 3}),
                                   stage("als", 12.0, status="failed")],
                        "seconds": 37.0, "failed": ["als"], "executors": 2, "session_seconds": 8.0,
                        "data_dir": "s3a://b/recsys",
                        "settings": settings | {"spark.master": "spark://127.0.0.1:1", "spark.executor.memory": "2g",
                                                "spark.cores.max": "2"},
                        "requests": {"GET": 9, "HEAD": 7, "PUT": 2, "POST": 1, "status_4xx": 3},
                        "upload": {"seconds": 1.5, "files": 3, "bytes": 5_500_000,
                                   "requests": {"PUT": 3, "POST": 6}},
                        "store": {"contents": contents}}}
    ratio = ratios(runs)
    assert ratio == {"stages": {"ingest": 2.5, "als": None}, "pipeline": pytest.approx(37.0 / 30.0, abs=0.01)}
    text = report({"scale": {"name": "50k", "events": 50_000, "users": 5_000, "products": 500}, "runs": runs,
                   "ratio": ratios(runs), "load_average_start": {"local": [0.1, 0.1, 0.1]}, "environment": {
                       "machine": {"cores": 2, "memory_gb": 1, "load_average": [0.0, 0.0, 0.0]},
                       "versions": {"spark": "4"}, "git": {"commit": "abc", "dirty": False}, "command": "x"}})
    assert "| ingest | 10.0 | 25.0 | 2.50 | 20 | 50 / 40 / 3 | 5 / 7 / 2 / 0 / 0 |" in text
    assert "| als | 20.0 | 12.0 (failed) | - |" in text
    assert "| **pipeline** | **30.0** | **37.0** | **1.23** |" in text
    assert "Shuffle partitions 8 in both" in text and "1.5 s for 3 files (5.5 MB" in text
    assert "Failed stages" in text and "19 requests" in text
