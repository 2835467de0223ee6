"""The nightly pipeline at scale: generated data (``jobs.generate_data``), then ingest,
popularity, ALS, EASE, content (TF-IDF), hybrid, ranked, evaluation and snapshot in one SparkSession,
as ``jobs.run_pipeline`` runs them; wall time and peak RSS per stage.

    python -m bench.pipeline                       # 1M, 3M and 10M events, one process each (~1 h+ on 2 cores)
    python -m bench.pipeline --scales 1M 3M        # some of them; results merge into pipeline.json
    python -m bench.pipeline --quick               # 50k events, 5k users, 500 products (a smoke run)
    python -m bench.pipeline --report-only         # rewrite pipeline.md and the growth PNGs from pipeline.json
    python -m bench.pipeline --help

Users and products scale with the events as at issue 6's point (10M events, 1M users,
100k products: see ``bench/pipeline/scales.py``). Generation is timed apart from the
pipeline; the generated landing files are reused by the next run of the same shape.
Each stage's peak RSS is taken for the driver's Python, the JVM (driver and executors
in local mode) and the Python workers (``bench.snapshot_build.peak_rss``). Several
scales run one after the other, each in its own process: a fresh JVM, so a scale's
memory figures are its own, and a scale that dies leaves the others' figures. Results
are written at the start and end of every stage, so a run stopped half-way says which
stage it reached: ``<out>/pipeline.json`` and ``<out>/pipeline.md``, then the growth
plots (``bench.growth``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from schemas.settings import PROJECT_ROOT, load_conf

from jobs.cli import configure_logging
from jobs.generate_data import generate
from jobs.paths import DataPaths

from bench import growth
from bench.pipeline.report import markdown
from bench.pipeline.scales import EVENTS_PER_PRODUCT, EVENTS_PER_USER, Scale
from bench.quality.environment import environment, load_average
from bench.snapshot_build.peak_rss import PeakRss

log = logging.getLogger("bench.pipeline")

START, DAYS = "2026-10-01", 30
AS_OF = datetime(2026, 10, 31, tzinfo=timezone.utc)  # the end of the generated window, as in make demo
SEED = 42
TARGET_SECONDS = 30 * 60  # issue 6: the whole nightly pipeline at 10M events on 2 cores
DEFAULT_SCALES = ("1M", "3M", "10M")
QUICK_SCALES = ("50k",)
DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
QUICK_OUT = Path(tempfile.gettempdir()) / "bench-pipeline-quick"
RESULTS = "pipeline.json"
# The parent's command line, recorded by the per-scale child processes.
COMMAND_VARIABLE = "BENCH_PIPELINE_COMMAND"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", nargs="+", default=None, metavar="EVENTS",
                   help=f"event counts (1M, 300k, 50000); users = events/{EVENTS_PER_USER}, products = "
                        f"events/{EVENTS_PER_PRODUCT} (default: {' '.join(DEFAULT_SCALES)})")
    p.add_argument("--quick", action="store_true",
                   help=f"scale {QUICK_SCALES[0]} only, results in {QUICK_OUT} (a smoke run, not the figures)")
    p.add_argument("--master", default="local[2]", help="Spark master (default local[2]: the issue's 2 cores)")
    p.add_argument("--driver-memory", default="12g",
                   help="spark.driver.memory (default 12g, the figures' setting: at 1M users the snapshot "
                        "build needs more than conf/spark.toml's 4g, and at 10M events the JVM's RSS "
                        "reaches 10 GB; see bench/README.md)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="one folder per scale goes here (default var/bench/pipeline[-quick])")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for pipeline.json/.md and the PNGs (default bench/results; --quick {QUICK_OUT})")
    p.add_argument("--fresh", action="store_true", help="drop the scales already in pipeline.json")
    p.add_argument("--report-only", action="store_true", help="only rewrite pipeline.md and the PNGs")
    p.add_argument("--findings", type=Path, default=None,
                   help="with --report-only: a Markdown file of conclusions, kept in pipeline.json and shown "
                        "at the end of pipeline.md")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


# --- results: one document, one entry per scale, rewritten as stages end ---------

def load_results(out: Path) -> dict:
    path = out / RESULTS
    if path.exists():
        return json.loads(path.read_text())
    return {"benchmark": "pipeline", "scales": {}}


def save_results(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["scales"] = dict(sorted(result["scales"].items(), key=lambda item: item[1]["shape"]["events"]))
    tmp = out / f".{RESULTS}.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, out / RESULTS)
    # lookup latency per snapshot size, if bench.serving was run
    points = growth.serving_points([json.loads(path.read_text()) for path in growth.serving_results(out)])
    (out / "pipeline.md").write_text(markdown(result, TARGET_SECONDS, points))


def record_scale(out: Path, name: str, entry: dict) -> None:
    """Merge one scale's entry into the results on disk (other scales stay as they are)."""
    result = load_results(out)
    result.setdefault("rules", {}).update(
        {"events_per_user": EVENTS_PER_USER, "events_per_product": EVENTS_PER_PRODUCT,
         "target_seconds": TARGET_SECONDS, "as_of": AS_OF.isoformat(), "window_days": DAYS, "seed": SEED})
    result["scales"][name] = entry
    save_results(out, result)


# --- one scale --------------------------------------------------------------------

def landing_ready(landing: Path, shape: dict) -> bool:
    marker = landing / ".shape.json"
    return marker.exists() and json.loads(marker.read_text()) == shape


def generate_landing(root: Path, scale: Scale) -> dict:
    """Landing files for the scale, reused when the same shape is already there."""
    landing = root / "landing"
    shape = {**scale.as_dict(), "seed": SEED, "start": START, "days": DAYS, "format": "jsonl"}
    if landing_ready(landing, shape):
        log.info("%s: reusing the landing files in %s", scale.name, landing)
        return {"reused": True, **json.loads((landing / ".generation.json").read_text())}
    shutil.rmtree(landing, ignore_errors=True)
    log.info("%s: generating %s events, %s users, %s products ...", scale.name, f"{scale.events:,}",
             f"{scale.users:,}", f"{scale.products:,}")
    with PeakRss(None) as memory:
        started = time.perf_counter()
        counts = generate(landing, users=scale.users, products=scale.products, events=scale.events, seed=SEED,
                          start=START, days=DAYS, fmt="jsonl")
        seconds = time.perf_counter() - started
    generation = {"seconds": round(seconds, 2), "peak_rss_mb": memory.mb(),
                  "bytes": sum(p.stat().st_size for p in landing.rglob("*") if p.is_file()),
                  "counts": {k: counts[k] for k in ("events", "products", "profiles", "users", "files")}}
    (landing / ".generation.json").write_text(json.dumps(generation))
    (landing / ".shape.json").write_text(json.dumps(shape))
    return {"reused": False, **generation}


def clear_outputs(root: Path) -> None:
    """Everything the pipeline wrote last time (lake, checkpoints, snapshots, evaluation):
    each run ingests the landing files from scratch."""
    for child in root.iterdir() if root.exists() else ():
        if child.name != "landing":
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def run_scale(scale: Scale, args: argparse.Namespace, out: Path, data_root: Path) -> dict:
    from jobs.spark_session import get_spark
    from bench.pipeline.stages import run_stages

    root = data_root / scale.name
    root.mkdir(parents=True, exist_ok=True)
    entry = {"shape": scale.as_dict(), "status": "generating", "stages": []}
    entry["generation"] = generate_landing(root, scale)
    clear_outputs(root)
    started = time.perf_counter()
    spark = get_spark("bench-pipeline", {"master": args.master, "conf": {"spark.driver.memory": args.driver_memory}})
    env = environment(spark.version)
    env["command"] = os.environ.get(COMMAND_VARIABLE, env["command"])
    entry.update({"environment": env, "session_seconds": round(time.perf_counter() - started, 2),
                  "master": spark.sparkContext.master,
                  "driver_memory": spark.sparkContext.getConf().get("spark.driver.memory"),
                  "status": "running"})
    record_scale(out, scale.name, entry)
    settings = load_conf("jobs")
    stages: dict[str, dict] = {}
    # A run stopped with SIGTERM (out of time) records the stage it was in and how long it had run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        for stage in run_stages(spark, DataPaths(root), AS_OF, settings):
            stages[stage["stage"]] = stage
            entry["stages"] = list(stages.values())
            entry["reached"] = stage["stage"]
            entry["pipeline_seconds"] = round(sum(s.get("seconds", 0) for s in entry["stages"]), 2)
            entry["environment"]["machine"]["load_average_end"] = load_average()
            record_scale(out, scale.name, entry)
    except (SystemExit, KeyboardInterrupt):
        entry["status"] = f"stopped during {entry.get('reached')} at {datetime.now(timezone.utc):%H:%M:%S}Z"
        entry["pipeline_seconds"] = round(sum(s.get("seconds", 0) for s in entry["stages"]), 2)
        entry["environment"]["machine"]["load_average_end"] = load_average()
        record_scale(out, scale.name, entry)
        raise
    failed = [s["stage"] for s in entry["stages"] if s["status"] == "failed"]
    entry["status"] = "failed: " + ", ".join(failed) if failed else "complete"
    entry["environment"]["machine"]["load_average_end"] = load_average()
    record_scale(out, scale.name, entry)
    spark.stop()
    shutil.rmtree(root / "snapshots", ignore_errors=True)  # GBs at 1M users; the lake stays for inspection
    return entry


def run_each_in_a_process(scales: list[Scale], args: argparse.Namespace, out: Path) -> int:
    """One child process per scale: each gets a fresh JVM (and its own memory figures)."""
    env = {**os.environ, COMMAND_VARIABLE: shlex.join(getattr(sys, "orig_argv", sys.argv))}
    worst = 0
    for scale in scales:
        argv = [sys.executable, "-m", "bench.pipeline", "--scales", scale.name, "--out", str(out),
                "--master", args.master, "--driver-memory", args.driver_memory, "--log-level", args.log_level]
        if args.data_root:
            argv += ["--data-root", str(args.data_root)]
        if args.quick:
            argv.append("--quick")
        log.info("%s: %s", scale.name, shlex.join(argv))
        code = subprocess.run(argv, cwd=PROJECT_ROOT, env=env).returncode
        if code:
            log.error("%s: exit code %d; going on with the next scale", scale.name, code)
            worst = max(worst, code)
    return worst


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    if args.report_only:
        result = load_results(out)
        if args.findings:
            result["findings"] = args.findings.read_text().strip()
        save_results(out, result)
        growth.write_all(out)
        return 0
    try:
        scales = [Scale.of(text) for text in (args.scales or (QUICK_SCALES if args.quick else DEFAULT_SCALES))]
    except ValueError as exc:
        parser().error(str(exc))
    if args.fresh:
        save_results(out, {"benchmark": "pipeline", "scales": {}})
    if len(scales) > 1:
        code = run_each_in_a_process(scales, args, out)
    else:
        data_root = args.data_root or PROJECT_ROOT / "var" / "bench" / ("pipeline-quick" if args.quick else "pipeline")
        entry = run_scale(scales[0], args, out, data_root)
        code = 0 if entry["status"] == "complete" else 2
    if os.environ.get(COMMAND_VARIABLE) is None:  # the parent (or a single scale) draws the plots
        growth.write_all(out)
        print((out / "pipeline.md").read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())
