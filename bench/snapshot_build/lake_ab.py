"""The snapshot build on an existing lake, today's builder against an earlier
commit's, alternating in one Spark session: what a builder change costs on real
pipeline output rather than on the synthetic lake.

    python -m bench.snapshot_build.lake_ab var/bench/pipeline/10M --compare-with 0979346
    python -m bench.snapshot_build.lake_ab DATA_DIR --compare-with REV --rounds 3
    python -m bench.snapshot_build.lake_ab --help

``DATA_DIR`` is a data folder the jobs wrote (``bench.pipeline`` keeps one per scale
under ``var/bench/pipeline/``; any ``RECSYS_DATA_DIR`` works): its ``candidates``,
``products`` and ``user_segments`` tables are read at their latest Delta versions,
nothing in it is changed. After ``--warmup`` untimed builds with each builder, each
round builds one snapshot with each builder, today's first in odd rounds and the
other's first in even ones, into ``DATA_DIR/snapshots/bench-ab-*`` (never published,
removed after each build). Per build: seconds, data.mdb bytes, bytes per listed user
and algorithm, peak RSS. (0979346 is the last commit of snapshot layout 1.)
Results: ``<out>/snapshot_build_lake.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from schemas.settings import PROJECT_ROOT
from schemas.snapshot import parse_recs_db_name

from jobs import build_snapshot as builder
from jobs.cli import configure_logging
from jobs.paths import DataPaths
from jobs.spark_session import get_spark

from bench.quality.environment import environment, machine_line, write_results
from bench.snapshot_build.__main__ import timed_build
from bench.snapshot_build.baseline import builder_at

log = logging.getLogger("bench.snapshot_build.lake_ab")

NAME = "snapshot_build_lake"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.snapshot_build.lake_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=Path, help="a data folder the jobs wrote (its tables are only read)")
    p.add_argument("--compare-with", metavar="REV", required=True,
                   help="the git revision whose builder, writer and packer run beside today's")
    p.add_argument("--rounds", type=int, default=2, help="builds with each builder, alternating (default 2)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed builds with each builder first: the JVM, the Python workers and the page "
                        "cache warm up (default 1)")
    p.add_argument("--driver-memory", default=None, help="spark.driver.memory (default: conf/spark.toml's)")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results",
                   help="folder for snapshot_build_lake.json/.md (default bench/results)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def listed_users_and_algorithms(databases: dict[str, int]) -> tuple[int, int]:
    """From a manifest's ``database -> entries``: the users of the longest user-list
    database, and how many user-list databases there are."""
    user_lists = [entries for name, entries in databases.items()
                  if (parse_recs_db_name(name) or ("",))[0] == "user"]
    return max(user_lists, default=0), len(user_lists)


def summarise(builds: list[dict]) -> dict:
    """Per builder: the seconds of each build, their best and median, the bytes."""
    summary = {}
    for label in dict.fromkeys(b["builder"] for b in builds):
        mine = [b for b in builds if b["builder"] == label]
        seconds = [b["seconds"] for b in mine]
        summary[label] = {"commit": mine[0]["commit"], "seconds": seconds, "best": min(seconds),
                          "median": statistics.median(seconds), "data_mdb_bytes": mine[0]["data_mdb_bytes"],
                          "bytes_per_user_per_algorithm": mine[0]["bytes_per_user_per_algorithm"]}
    return summary


def run(args: argparse.Namespace) -> dict:
    paths = DataPaths(args.data_dir)
    if not Path(paths.table("candidates")).exists():
        raise SystemExit(f"{args.data_dir}: no candidates table; point at a data folder the jobs wrote")
    overrides = {"conf": {"spark.driver.memory": args.driver_memory}} if args.driver_memory else None
    spark = get_spark("bench-snapshot-build-lake", overrides)
    before = builder_at(args.compare_with)
    builders = {"today": (builder, None), "before": (before, before.COMMIT)}
    result = {"benchmark": NAME, "data_dir": str(args.data_dir), **environment(spark.version),
              "compare_with": before.COMMIT, "warmup": args.warmup, "builds": []}
    try:
        for _ in range(args.warmup):
            for label, (module, _commit) in builders.items():
                version = f"bench-ab-warmup-{label}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
                log.info("warm-up: building %s with %s's builder (not counted) ...", version, label)
                timed_build(spark, paths, version, module)
                shutil.rmtree(paths.snapshots.local_path / version, ignore_errors=True)
        for round_ in range(args.rounds):
            order = ("today", "before") if round_ % 2 == 0 else ("before", "today")
            for label in order:
                module, commit = builders[label]
                version = f"bench-ab-{label}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
                log.info("round %d: building %s with %s's builder ...", round_ + 1, version, label)
                built = timed_build(spark, paths, version, module)
                shutil.rmtree(paths.snapshots.local_path / version, ignore_errors=True)
                users, algorithms = listed_users_and_algorithms(built["databases"])
                per = built["data_mdb_bytes"] / max(users * algorithms, 1)
                result["builds"].append({"round": round_ + 1, "builder": label,
                                         "commit": commit or result["git"]["commit"],
                                         "seconds": built["seconds"], "data_mdb_bytes": built["data_mdb_bytes"],
                                         "users": users, "algorithms": algorithms,
                                         "bytes_per_user_per_algorithm": round(per, 1),
                                         "peak_rss_mb": built["peak_rss_mb"]})
                log.info("%s: %.1f s, %.0f bytes per user and algorithm", label, built["seconds"], per)
    finally:
        spark.stop()
    result["summary"] = summarise(result["builds"])
    return result


def markdown(result: dict) -> str:
    summary, builds = result["summary"], result["builds"]
    first = builds[0]
    lines = [f"# Snapshot build on an existing lake: today's builder against {result['compare_with'][:10]}'s",
             "", f"`{result['data_dir']}`: {first['users']:,} listed users x {first['algorithms']} algorithms.",
             f"After {result['warmup']} untimed build(s) with each builder, builds alternate (today's first "
             "in odd rounds), each into its own unpublished folder.", "",
             "| builder | commit | seconds, each build | best | median | data.mdb (MB) "
             "| bytes / user / algorithm |", "|---|---|---|---|---|---|---|"]
    for label, s in summary.items():
        lines.append(f"| {label} | {str(s['commit'])[:10]} | {' / '.join(f'{x:.1f}' for x in s['seconds'])} "
                     f"| {s['best']:.1f} | {s['median']:.1f} | {s['data_mdb_bytes'] / 1e6:,.0f} "
                     f"| {s['bytes_per_user_per_algorithm']:.0f} |")
    if {"today", "before"} <= summary.keys():
        today, before = summary["today"], summary["before"]
        lines += ["", f"Today's builder over the earlier one: {today['median'] / before['median']:.2f}x the "
                      f"time (medians), {today['data_mdb_bytes'] / before['data_mdb_bytes']:.2f}x the bytes."]
    lines += ["", machine_line(result), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    result = run(args)
    write_results(args.out, NAME, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
