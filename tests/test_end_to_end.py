"""The spine for real: generated data -> Spark jobs -> LMDB snapshot -> gunicorn -> HTTP."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict

import pytest
import requests

from jobs import als, evaluation, ranked, run_pipeline
from jobs.candidates import model_version
from jobs.cli import parse_as_of
from jobs.generate_data import generate
from jobs.tuned import TUNED_FILE, with_tuned
from schemas.settings import load_conf
from schemas.snapshot import read_current_version, verify_snapshot_dir
from tests.lookup_fixtures import running_gunicorn

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

AS_OF = "2026-10-31T00:00:00Z"
# A user who signed up (profile, no history) and has done nothing yet, in the most
# common profile segment of the generated users.
NEW_PROFILE_USER = 990_001
NEW_PROFILE_FEATURES = {"country": "US", "age_band": "25-34", "device": "android"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, spark):
    """Data generated, ingested, scored and published once for the module."""
    root = tmp_path_factory.mktemp("e2e")
    generate(root / "landing", users=300, products=80, events=6000, seed=7, start="2026-10-01", days=30)
    (root / "landing" / "profiles" / "signed-up-today.jsonl").write_text(
        json.dumps({"user_id": NEW_PROFILE_USER, "other_features": NEW_PROFILE_FEATURES}) + "\n")
    return root


def test_pipeline_reports_and_publishes(pipeline, capsys, monkeypatch):
    """The pipeline accounts for every row, tunes, evaluates and publishes a snapshot with user lists."""
    monkeypatch.setenv("RECSYS__JOBS__TUNING__MAX_TRIALS", "2")  # enough to pick between two
    assert run_pipeline.main(["--data-dir", str(pipeline), "--as-of", AS_OF, "--log-level", "WARNING",
                              "--tune", "--evaluate"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tuning"]["ok"] and summary["evaluation"]["ok"], summary
    for counts in summary["ingest"].values():
        assert counts["received"] == counts["accepted"] + counts["rejected"]
    assert summary["ingest"]["events"]["received"] == 6000
    assert all(result["ok"] for result in summary["algorithms"].values()), summary["algorithms"]
    databases = summary["snapshot"]["databases"]
    for algorithm in ("popular", "als", "ease", "content", "hybrid", "ranked"):
        assert databases[f"recs/user/{algorithm}"] > 200, algorithm
    for algorithm in ("als", "ease", "content"):
        assert databases[f"recs/product/{algorithm}"] > 50, algorithm
    assert read_current_version(pipeline / "snapshots") == summary["snapshot"]["version"]
    manifest = verify_snapshot_dir(pipeline / "snapshots" / summary["snapshot"]["version"])
    assert manifest.model_versions["ranked"] == summary["algorithms"]["ranked"]["lists"]["model_version"]


def test_gunicorn_serves_the_snapshot(spark, pipeline):
    """Real gunicorn answers known users from their lists and unknown users from the fallback."""
    version = read_current_version(pipeline / "snapshots")
    assert version, "the pipeline test must run first"
    lists = spark.read.format("delta").load(str(pipeline / "lake" / "candidates"))
    user_row = lists.where("subject_kind = 'user' and algorithm = 'hybrid'").orderBy("subject_id").first()
    popular_row = lists.where(f"subject_kind = 'user' and algorithm = 'popular' and subject_id = '{user_row.subject_id}'").first()
    global_ids = lists.where("subject_kind = 'global'").first().product_ids
    inactive = {r.product_id for r in spark.read.format("delta").load(str(pipeline / "lake" / "products"))
                .where("not active").collect()}

    with running_gunicorn(pipeline) as server:
        server.wait_all_workers_on(version)  # each worker loads the snapshot on its own
        answer = requests.get(f"{server.base_url}/v1/users/{user_row.subject_id}/recommendations?k=5", timeout=5)
        assert answer.status_code == 200
        body = answer.json()
        # The bandit picks among the user's lists (priors from the evaluation's policy.json).
        assert body["snapshot_version"] == version and body["fallback"] is None and body["degraded"] is False
        own = {r.algorithm: r.product_ids for r in lists.where(
            f"subject_kind = 'user' and subject_id = '{user_row.subject_id}'").collect()}
        assert body["algorithm"] in own
        expected = [p for p in own[body["algorithm"]] if p not in inactive][:5]
        assert [item["product_id"] for item in body["items"]] == expected

        chosen = requests.get(f"{server.base_url}/v1/users/{user_row.subject_id}/recommendations",
                              params={"k": 5, "algorithm": "popular"}, timeout=5).json()
        assert chosen["algorithm"] == "popular"
        assert [i["product_id"] for i in chosen["items"]] == [p for p in popular_row.product_ids if p not in inactive][:5]
        for algorithm in ("als", "content"):
            answer = requests.get(f"{server.base_url}/v1/users/{user_row.subject_id}/recommendations",
                                  params={"k": 5, "algorithm": algorithm}, timeout=5).json()
            assert answer["algorithm"] == algorithm and len(answer["items"]) == 5

        segment = lists.where("subject_kind = 'segment' and subject_id = 'country=US|age_band=25-34'").first()
        assert segment is not None, "the most common profile segment should have a popular list"
        signed_up = requests.get(f"{server.base_url}/v1/users/{NEW_PROFILE_USER}/recommendations?k=5",
                                 timeout=5).json()
        assert (signed_up["algorithm"], signed_up["fallback"]) == ("popular_fallback", "profile_segment")
        assert [i["product_id"] for i in signed_up["items"]] == [
            p for p in segment.product_ids if p not in inactive][:5]

        unknown = requests.get(f"{server.base_url}/v1/users/987654321/recommendations?k=3", timeout=5).json()
        assert unknown["algorithm"] == "popular_fallback" and unknown["fallback"] == "unknown_user"
        assert [i["product_id"] for i in unknown["items"]] == [p for p in global_ids if p not in inactive][:3]

        similar = requests.get(f"{server.base_url}/v1/products/{expected[0]}/similar?k=3", timeout=5).json()
        assert similar.get("algorithm") == "als" and similar["fallback"] is None, similar
        assert expected[0] not in [i["product_id"] for i in similar["items"]]
        by_content = requests.get(f"{server.base_url}/v1/products/{expected[0]}/similar",
                                  params={"k": 3, "algorithm": "content"}, timeout=5).json()
        assert by_content["algorithm"] == "content" and len(by_content["items"]) == 3

        bad = requests.get(f"{server.base_url}/v1/users/abc/recommendations", timeout=5)
        assert bad.status_code == 400 and "user_id" in bad.json()["error"]["message"]


def test_pipeline_tuned_evaluated_and_used_the_winners(spark, pipeline):
    """Tuning trials and evaluation rows are in the evaluations table; tuned.json's ALS
    winner is what the ALS step ran with; policy and report are on disk."""
    tuned = json.loads((pipeline / TUNED_FILE).read_text())
    assert tuned["scores"]["als"]["trials"] == 2 and tuned["scores"]["hybrid"]["trials"] == 2
    settings = with_tuned(load_conf("jobs"), pipeline)
    assert settings["als"]["rank"] == tuned["settings"]["als"]["rank"]
    expected = model_version("als", parse_as_of(AS_OF), asdict(als.params_from_settings(settings["als"])))
    lists = spark.read.format("delta").load(str(pipeline / "lake" / "candidates"))
    assert {r[0] for r in lists.where("algorithm = 'als'").select("model_version").distinct().collect()} == {expected}

    evaluations = spark.read.format("delta").load(str(pipeline / "lake" / "evaluations"))
    trials = evaluations.where("run_id like 'tuning-%' and metric = 'ndcg@10'")
    assert sorted((r.algorithm, r.trial) for r in trials.collect()) == [
        ("als", 0), ("als", 1), ("ease", 0), ("ease", 1), ("hybrid", 0), ("hybrid", 1), ("ranked", 0), ("ranked", 1)]
    assert all(json.loads(r.params) for r in trials.collect())
    assert settings["ranked"]["num_leaves"] == tuned["settings"]["ranked"]["num_leaves"]
    run = evaluations.where("run_id not like 'tuning-%'")
    assert {r.algorithm for r in run.select("algorithm").distinct().collect()} == {
        "global_popular", "popular", "als", "ease", "content", "hybrid", "ranked"}
    policy = json.loads((pipeline / "evaluation" / "policy.json").read_text())
    assert set(policy["priors"]["all"]) == {"popular", "als", "ease", "content", "hybrid", "ranked"}
    assert sorted(policy["preference"]) == sorted(policy["priors"]["all"]) and policy["baseline"]["all"] >= 0
    report = (pipeline / "evaluation" / "report" / "report.html").read_text()
    for png in ("metric_by_algorithm.png", "by_segment.png", "by_k.png", "tuning.png", "importance.png"):
        assert f'src="{png}"' in report and (pipeline / "evaluation" / "report" / png).stat().st_size > 1000


def test_a_run_within_retrain_days_reuses_the_rankers(pipeline, caplog, capsys):
    """The next run, nightly job and evaluation alike, scores with the models the
    pipeline saved instead of training new ones; ``--retrain`` trains regardless."""
    caplog.set_level(logging.INFO)
    saved = {d: sorted(p.name for p in (pipeline / d).iterdir()) for d in ("models/ranked", "evaluation/ranker")}
    assert all(len(names) == 1 for names in saved.values()), saved
    arguments = ["--data-dir", str(pipeline), "--as-of", AS_OF, "--log-level", "INFO"]
    assert ranked.main(arguments) == 0
    assert f"ranked: reusing model {saved['models/ranked'][0]}" in caplog.text and "trained on" not in caplog.text
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["result"]["model_version"] == saved["models/ranked"][0]
    caplog.clear()
    assert evaluation.main(arguments) == 0
    assert f"ranked: reusing model {saved['evaluation/ranker'][0]}" in caplog.text
    assert {d: sorted(p.name for p in (pipeline / d).iterdir()) for d in saved} == saved
    caplog.clear()
    assert ranked.main([*arguments, "--retrain"]) == 0
    assert "reusing" not in caplog.text and "trained on" in caplog.text
