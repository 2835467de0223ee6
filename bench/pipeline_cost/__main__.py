"""What EASE and the learned ranker add to the nightly pipeline: the same generated
data through ``bench.pipeline``'s stages twice, side by side in one run -- every
algorithm, then without ``ease`` and ``ranked`` (their stages left out, and left out
of the evaluation, the hybrid's weights and the ranker's generators) -- each in a
fresh process (its own JVM, so neither inherits the other's warm-up). The run with
every algorithm then runs ``ranked`` and ``evaluation`` once more: the next night
within ``[ranked] retrain_days``, which reuses the rankers the first one trained
(the other stages' work does not change from night to night). Issue 26's target:
the pair adds at most 30 % at 10M events.

    python -m bench.pipeline_cost                 # 1M events (the shapes of bench.pipeline)
    python -m bench.pipeline_cost --scale 10M     # issue 26's point (~45 min on 2 cores)

Results: ``bench/results/pipeline_cost.json`` and ``pipeline_cost.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from schemas.settings import PROJECT_ROOT, deep_merge, load_conf

from jobs.cli import configure_logging
from jobs.paths import DataPaths

from bench.pipeline.__main__ import AS_OF, clear_outputs, generate_landing
from bench.pipeline.scales import Scale
from bench.quality.environment import environment, load_average, machine_line, write_results

log = logging.getLogger("bench.pipeline_cost")

LEFT_OUT = ("ease", "ranked")
# What a night within retrain_days does differently: it reuses the saved rankers.
REUSING = ("ranked", "evaluation")
TARGET_RATIO = 1.3
DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"


def without(settings: dict, left_out: tuple[str, ...]) -> dict:
    """``settings`` as if ``left_out`` did not exist: not evaluated, not fused, not re-ranked."""
    return deep_merge(settings, {
        "evaluation": {"algorithms": [a for a in settings["evaluation"]["algorithms"] if a not in left_out]},
        "ranked": {"generators": [g for g in settings["ranked"]["generators"] if g not in left_out]},
    }) | {"hybrid": {**settings["hybrid"],
                     "weights": {a: w for a, w in settings["hybrid"]["weights"].items() if a not in left_out}}}


def run_mode(scale: Scale, mode: str, data_root: Path) -> dict:
    """One pass over the stages in this process: ``all`` or ``without``."""
    from jobs.spark_session import get_spark
    from bench.pipeline.stages import STAGES, run_stages

    root = data_root / scale.name
    clear_outputs(root)
    settings = load_conf("jobs")
    names = STAGES
    if mode == "without":
        settings = without(settings, LEFT_OUT)
        names = tuple(s for s in STAGES if s not in LEFT_OUT)
    spark = get_spark(f"bench-pipeline-cost-{mode}", {"master": "local[2]", "conf": {"spark.driver.memory": "12g"}})
    stages = {}
    for entry in run_stages(spark, DataPaths(root), AS_OF, settings, names):
        stages[entry["stage"]] = entry
    reused = {}
    if mode == "all":
        for entry in run_stages(spark, DataPaths(root), AS_OF, settings, REUSING):
            reused[entry["stage"]] = entry
    spark.stop()
    return {"stages": list(stages.values()), "reusing": list(reused.values()),
            "seconds": round(sum(s.get("seconds", 0) for s in stages.values()), 1),
            "failed": [s["stage"] for s in [*stages.values(), *reused.values()] if s["status"] != "ok"]}


def night_seconds(run: dict) -> dict[str, float]:
    """The pipeline's seconds on a night that trains the rankers and on one that reuses
    them (its ``reusing`` stages in place of the first night's; without them, the same)."""
    first = {s["stage"]: s.get("seconds", 0.0) for s in run["stages"]}
    later = first | {s["stage"]: s.get("seconds", 0.0) for s in run.get("reusing", [])}
    return {"training": round(sum(first.values()), 1), "reusing": round(sum(later.values()), 1)}


def ratios(runs: dict) -> dict[str, float]:
    """With / without, on a training night, a reusing night, and over a week that
    retrains once every ``retrain_days``."""
    base = runs["without"]["seconds"]
    nights = night_seconds(runs["all"])
    retrain_days = max(1.0, float(load_conf("jobs")["ranked"]["retrain_days"]))  # 0: every night trains
    week = (nights["training"] + (retrain_days - 1) * nights["reusing"]) / retrain_days
    return {"training": nights["training"] / base, "reusing": nights["reusing"] / base, "mean": week / base,
            "retrain_days": retrain_days}


def report(result: dict) -> str:
    runs, ratio = result["runs"], result["ratio"]
    lines = [
        "# What EASE and the ranker cost the nightly pipeline", "",
        f"`{result['scale']['name']}` generated events ({result['scale']['events']:,} events, "
        f"{result['scale']['users']:,} users, {result['scale']['products']:,} products), every stage of "
        "`bench.pipeline` twice in fresh processes: with every algorithm, and without "
        f"{' and '.join(LEFT_OUT)} (left out of the stages, the evaluation, the hybrid and the ranker's "
        f"generators). Target (issue 26, at 10M events): ratio <= {TARGET_RATIO}.", "",
        "| stage | every algorithm, training the rankers (s) | the next night, reusing them (s) | without (s) |",
        "|---|---:|---:|---:|",
    ]
    seconds = {mode: {s["stage"]: s.get("seconds") for s in run["stages"]} for mode, run in runs.items()}
    reusing = {s["stage"]: s.get("seconds") for s in runs["all"].get("reusing", [])}
    for stage, first in seconds["all"].items():
        later, other = reusing.get(stage, first), seconds["without"].get(stage)
        lines.append(f"| {stage} | {first:.1f} | {later:.1f} | {'-' if other is None else f'{other:.1f}'} |")
    nights = night_seconds(runs["all"])
    lines += [f"| **pipeline** | **{nights['training']:.1f}** | **{nights['reusing']:.1f}** | "
              f"**{runs['without']['seconds']:.1f}** |", "",
              "Ratio with / without: "
              + ", ".join(f"{label} **{ratio[key]:.2f}**" for key, label in (
                  ("training", "on a night that trains the rankers"), ("reusing", "on a night that reuses them"),
                  ("mean", f"over {ratio['retrain_days']:g} nights (one training)")))
              + f" ({'within' if ratio['mean'] <= TARGET_RATIO else 'above'} the target of {TARGET_RATIO}"
              " at this scale).", ""]
    if any(run["failed"] for run in runs.values()):
        lines.append(f"Failed stages: {json.dumps({m: r['failed'] for m, r in runs.items()})}.")
    lines += [f"Load average at the start of each run: {json.dumps(result['load_average_start'])}.", "",
              machine_line(result["environment"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="1M", help="events, e.g. 1M or 10M (default 1M)")
    p.add_argument("--data-root", type=Path, default=PROJECT_ROOT / "var" / "bench" / "pipeline")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--mode", choices=("all", "without"), help=argparse.SUPPRESS)  # the child processes
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    scale = Scale.of(args.scale)
    if args.mode:  # a child: one pass, its result as the last line of stdout
        print(json.dumps(run_mode(scale, args.mode, args.data_root)))
        return 0
    generate_landing(args.data_root / scale.name, scale)
    import pyspark

    env = environment(pyspark.__version__)  # before the runs: its load average is the start's
    runs, loads = {}, {}
    for mode in ("all", "without"):
        loads[mode] = load_average()
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "bench.pipeline_cost", "--scale", args.scale, "--mode", mode,
                                "--data-root", str(args.data_root), "--log-level", args.log_level],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True, check=True)
        runs[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        log.info("%s: %.0f s (%.0f s with start-up)", mode, runs[mode]["seconds"], time.perf_counter() - started)
    result = {"scale": scale.as_dict() | {"name": scale.name}, "runs": runs, "load_average_start": loads,
              "ratio": ratios(runs), "environment": env}
    write_results(args.out, "pipeline_cost", result, report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
