"""Hybrid fusion at scale: ``jobs.hybrid.fused_user_lists`` against the same function
as it was at an earlier commit (the explode-and-group version by default), side by
side in one SparkSession on the same cached lists.

    python -m bench.hybrid                  # 100k users x 3 algorithms x 100 items
    python -m bench.hybrid --quick          # 20k users
    python -m bench.hybrid --help

The lists are the snapshot benchmark's synthetic ones (``bench.snapshot_build.synthetic``:
hashed, distinct ids per list), for als, content and popular, built in memory and
cached before any timing. Each implementation fuses them with the shipped weights
and writes to Spark's ``noop`` sink; the current one runs first and last (the first
run also warms the JVM), the baseline between. Then both fuse the lists of a sample
of users, compared list by list. Results: ``<out>/hybrid.json`` and ``hybrid.md``.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import functions as F

from schemas.settings import PROJECT_ROOT, load_conf

from jobs import hybrid
from jobs.cli import configure_logging
from jobs.spark_session import get_spark

from bench.quality.environment import environment, machine_line, write_results
from bench.snapshot_build.baseline import module_at
from bench.snapshot_build.synthetic import LakeShape, candidates_frame

log = logging.getLogger("bench.hybrid")

AS_OF = datetime(2026, 10, 31, tzinfo=timezone.utc)
BASELINE = "a18f2a2"  # the last commit with the explode-and-group fusion
ALGORITHMS = ("als", "content", "popular")
SAMPLE_USERS = 5_000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.hybrid", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=None, help="users (default 100k, --quick 20k)")
    p.add_argument("--items", type=int, default=100, help="items per list (default 100)")
    p.add_argument("--products", type=int, default=100_000, help="catalog size the ids come from (default 100k)")
    p.add_argument("--quick", action="store_true", help="20k users")
    p.add_argument("--compare-with", metavar="REV", default=BASELINE,
                   help=f"git revision whose jobs/hybrid.py is the baseline (default {BASELINE})")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results",
                   help="folder for hybrid.json/.md (default bench/results)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def timed(fuse, lists, params) -> float:
    started = time.perf_counter()
    fuse(lists, params, AS_OF).write.format("noop").mode("overwrite").save()
    return round(time.perf_counter() - started, 2)


def sample_lists(fuse, lists, params) -> dict[str, list[int]]:
    sample = lists.where(F.col("subject_id").cast("long") < SAMPLE_USERS)
    return {r.subject_id: list(r.product_ids) for r in fuse(sample, params, AS_OF).collect()}


def run(args: argparse.Namespace) -> dict:
    users = args.users or (20_000 if args.quick else 100_000)
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{args.compare_with}^{{commit}}"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    # Registered: its dataclasses need it, and the old fusion has no Python UDF to ship.
    baseline = module_at(commit, "jobs/hybrid.py", f"baseline_hybrid_{commit[:10]}", register=True)
    spark = get_spark("bench-hybrid")
    shape = LakeShape(users, args.products, args.items, len(ALGORITHMS))
    frames = [candidates_frame(spark, shape, a, 8) for a in ALGORITHMS]
    lists = frames[0].unionByName(frames[1]).unionByName(frames[2]).cache()
    log.info("%d lists cached", lists.count())
    weights = {a: w for a, w in load_conf("jobs")["hybrid"]["weights"].items() if a in ALGORITHMS}
    current_params, baseline_params = hybrid.HybridParams(weights=weights), baseline.HybridParams(weights=weights)
    runs = []
    for name, fuse, params in (("current", hybrid.fused_user_lists, current_params),
                               ("baseline", baseline.fused_user_lists, baseline_params),
                               ("current", hybrid.fused_user_lists, current_params)):
        seconds = timed(fuse, lists, params)
        log.info("%s: %.1f s", name, seconds)
        runs.append({"implementation": name, "seconds": seconds})
    mine, theirs = (sample_lists(f, lists, p) for f, p in ((hybrid.fused_user_lists, current_params),
                                                            (baseline.fused_user_lists, baseline_params)))
    same = sum(mine.get(u) == ids for u, ids in theirs.items())
    spark.stop()
    current = min(r["seconds"] for r in runs if r["implementation"] == "current")
    before = next(r["seconds"] for r in runs if r["implementation"] == "baseline")
    return {"benchmark": "hybrid", **environment(spark.version), "baseline_commit": commit,
            "shape": {"users": users, "algorithms": list(ALGORITHMS), "items": args.items},
            "weights": weights, "runs": runs, "speedup": round(before / current, 2),
            "sample": {"users": len(theirs), "identical": same, "only_current": len(set(mine) - set(theirs))}}


def markdown(result: dict) -> str:
    shape = result["shape"]
    lines = [f"# Hybrid fusion: {shape['users']:,} users x {len(shape['algorithms'])} algorithms x "
             f"{shape['items']} items", "",
             "| run | implementation | seconds |", "|---|---|---|"]
    lines += [f"| {i + 1} | {r['implementation']} | {r['seconds']:.1f} |" for i, r in enumerate(result["runs"])]
    sample = result["sample"]
    lines += ["", f"Current (best of its two runs) against the baseline of {result['baseline_commit'][:10]}: "
                  f"**{result['speedup']}x faster**. Lists of {sample['users']:,} sampled users compared: "
                  f"{sample['identical']:,} identical.", "", machine_line(result), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    result = run(args)
    write_results(args.out, "hybrid", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
