"""Run the whole batch pipeline in one Spark session:
ingest -> [tuning] -> popularity, ALS, EASE, content -> hybrid, ranked -> [evaluation] -> snapshot.

The scheduler runs these as separate tasks; this entry point is for the demo, for
tests and for a one-off rebuild by hand. ``--tune`` searches ALS and hybrid
settings first (jobs.tuning), so the algorithms run with the winners;
``--evaluate`` scores every algorithm offline (jobs.evaluation: metrics, policy
and report) before the snapshot is built.

A failed algorithm, tuning or evaluation degrades the run instead of stopping it:
the algorithm's lists from the previous run stay in the candidates table (or are
absent), the other steps go on, the summary names the failure, and the exit code
is 2. Ingest and the snapshot build are not optional: their failure stops the run
with exit code 1.

Run: ``python -m jobs.run_pipeline --help`` or ``spark-submit jobs/run_pipeline.py --help``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from datetime import datetime
from typing import Callable

from pyspark.sql import SparkSession

from schemas.settings import load_conf

from jobs import als, content, ease, evaluation, hybrid, popularity, ranked
from jobs.build_snapshot import build_snapshot
from jobs.cli import configure_logging, data_paths, job_parser, resolve_as_of
from jobs.ingest import run_ingest
from jobs.paths import DataPaths
from jobs.spark_session import get_spark
from jobs.tuned import with_tuned
from jobs.tuning import params_from_settings as tuning_params
from jobs.tuning import run_tuning

log = logging.getLogger(__name__)

EXIT_DEGRADED = 2

# name -> (its params from the job settings, its run function). Order matters: hybrid
# blends and ranked re-ranks the lists the others wrote.
ALGORITHM_STEPS: dict[str, tuple[Callable[[dict], object], Callable]] = {
    "popular": (lambda s: popularity.params_from_settings(s["popularity"]), popularity.run_popularity),
    "als": (lambda s: als.params_from_settings(s["als"]), als.run_als),
    "ease": (lambda s: ease.params_from_settings(s["ease"]), ease.run_ease),
    "content": (lambda s: content.params_from_settings(s["content"]), content.run_content),
    "hybrid": (lambda s: hybrid.params_from_settings(s["hybrid"]), hybrid.run_hybrid),
    "ranked": (ranked.params_from_settings, ranked.run_ranked),  # reads the generators' sections too
}


def run_algorithms(spark: SparkSession, paths: DataPaths, as_of: datetime, settings: dict,
                   names: list[str]) -> dict[str, dict]:
    """Run each named algorithm step; a failure is logged and reported, not raised."""
    results: dict[str, dict] = {}
    for name in names:
        params_of, run = ALGORITHM_STEPS[name]
        started = time.monotonic()
        try:
            written = run(spark, paths, as_of, params_of(settings))
        except Exception as exc:  # one algorithm must not take the others down
            log.exception("%s failed; the snapshot will carry its previous lists, if any", name)
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        results[name] = {"ok": True, "lists": written, "seconds": round(time.monotonic() - started, 1)}
        log.info("%s done in %.1f s", name, time.monotonic() - started)
    return results


def optional_step(name: str, action: Callable) -> dict:
    """``{"ok": True, "result": action()}``, or the error if it raised: the run goes on."""
    try:
        return {"ok": True, "result": action()}
    except Exception as exc:  # tuning or evaluation must not keep a snapshot from being built
        log.exception("%s failed; the run goes on without it", name)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--algorithms", nargs="+", choices=list(ALGORITHM_STEPS), default=list(ALGORITHM_STEPS),
                        help="algorithm steps to run, in this order")
    parser.add_argument("--no-publish", action="store_true", help="build the snapshot but leave CURRENT alone")
    parser.add_argument("--tune", action="store_true", help="search ALS and hybrid settings before the algorithms "
                        "run (time budget: [tuning] in conf/jobs.toml)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate every algorithm offline before the "
                        "snapshot: evaluations table, evaluation/policy.json, evaluation/report/")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = data_paths(settings, args.data_dir)
    as_of = resolve_as_of(args.as_of)
    spark = get_spark("recsys-pipeline")
    summary: dict = {"as_of": as_of.isoformat()}
    started = time.monotonic()

    def step(label: str, action: Callable):
        log.info("[%s] starting (%.0f s so far)", label, time.monotonic() - started)
        return action()

    ingest = step("ingest", lambda: run_ingest(spark, paths, as_of, settings["ingest"]))
    summary["ingest"] = {k: asdict(v) for k, v in ingest.items()}
    if args.tune:
        summary["tuning"] = step("tuning", lambda: optional_step("tuning", lambda: run_tuning(
            spark, paths, as_of, settings, evaluation.params_from_settings(settings["evaluation"]),
            tuning_params(settings["tuning"]))["scores"]))
    settings = with_tuned(settings, paths.root)
    summary["algorithms"] = step("algorithms", lambda: run_algorithms(spark, paths, as_of, settings, args.algorithms))
    if args.evaluate:
        summary["evaluation"] = step("evaluation", lambda: optional_step("evaluation", lambda: evaluation.run_evaluation(
            spark, paths, as_of, settings, evaluation.params_from_settings(settings["evaluation"]))["best"]))
    manifest = step("snapshot", lambda: build_snapshot(spark, paths, as_of, settings["snapshot"],
                                                       do_publish=not args.no_publish))
    summary["snapshot"] = {"version": manifest.version, "databases": manifest.databases,
                           "published": not args.no_publish}
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary))
    degraded = [name for name, result in summary["algorithms"].items() if not result["ok"]]
    degraded += [name for name in ("tuning", "evaluation") if name in summary and not summary[name]["ok"]]
    if degraded:
        log.warning("snapshot %s is degraded: %s failed", manifest.version, ", ".join(degraded))
        return EXIT_DEGRADED
    return 0


if __name__ == "__main__":
    sys.exit(main())
