"""Content user lists at scale: ``jobs.content.user_content_lists`` against the same
function as it was at an earlier commit (the explode-and-join version by default),
side by side in one SparkSession on the same cached input.

    python -m bench.content                 # 100k users, 10k products, 1M events
    python -m bench.content --quick         # 20k users, 2k products, 200k events
    python -m bench.content --help

Input: a world from ``jobs.generate_data`` (its catalog and its events, written to
Parquet under ``var/bench/content/input``), the [content] settings of conf/jobs.toml. Before any
timing, the real product documents, TF-IDF vectors and similar-product lists are
computed and cached, and so are the decayed event weights (``jobs.interactions
.weighted``). Each implementation then builds every user's list from them and
writes it as Parquet under ``var/bench/content/run-<n>``: current, baseline,
current, baseline (alternated: the load of a shared machine changes; the first run
also warms the JVM and the Python workers); the ratio is best against best. The
current version's time includes collecting and broadcasting the neighbour lists.

Check: every list of the first baseline run against the second current run's, user
by user (ids and float scores); and each implementation's two runs against each other.
Results: ``<out>/content.json`` and ``content.md``.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas import EVENT_TYPES
from schemas.settings import PROJECT_ROOT, load_conf

from jobs import content
from jobs.cli import configure_logging
from jobs.generate_data import build_world, event_chunks, products_table
from jobs.interactions import weighted
from jobs.spark_session import get_spark

from bench.quality.environment import environment, load_average, machine_line, write_results
from bench.snapshot_build.baseline import module_at

log = logging.getLogger("bench.content")

BASELINE = "334f818"  # the last commit with the explode-and-join user lists
SEED = 42
START = "2026-10-01"
DAYS = 30
EVENTS_PER_USER = 10  # issue 6's ratio: 10M events, 1M users, 100k products
WORK_DIR = PROJECT_ROOT / "var" / "bench" / "content"
# Alternated, so that a change in the load of a shared machine weighs on both; the first
# run also warms the JVM and the Python workers.
RUNS = ("current", "baseline", "current", "baseline")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.content", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=None, help="users (default 100k, --quick 20k)")
    p.add_argument("--products", type=int, default=None, help="products (default 10k, --quick 2k)")
    p.add_argument("--events", type=int, default=None, help=f"events (default {EVENTS_PER_USER} per user)")
    p.add_argument("--quick", action="store_true", help="20k users, 2k products, 200k events")
    p.add_argument("--compare-with", metavar="REV", default=BASELINE,
                   help=f"git revision whose jobs/content.py is the baseline (default {BASELINE})")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for content.json/.md (default bench/results; var/bench/content-quick with --quick)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def world_frames(spark: SparkSession, users: int, products: int, events: int) -> tuple[DataFrame, DataFrame, datetime]:
    """(products, events, as_of) of a generated world: the catalog as product_documents
    reads it, the events as interactions (user_id, event_type, product_id, timestamp).
    Written to Parquet under WORK_DIR/input and read back: a frame made from local data
    would carry its rows in every task's lineage."""
    world = build_world(users, products, SEED, START, DAYS)
    catalog = products_table(world.catalog).select(["product_id", "category", "price", "active", "other_features"])
    chunks = []
    for _, columns in event_chunks(world, events):
        chunks.append(pa.table({
            "user_id": pa.array(columns["user_id"], pa.int64()),
            "event_type": pc.take(pa.array(EVENT_TYPES, pa.string()), pa.array(columns["event_type"], pa.int8())),
            "product_id": pa.array(columns["product_id"], pa.int64()),
            "timestamp": pa.array(columns["timestamp"].astype("int64") * 1_000_000, pa.timestamp("us", tz="UTC")),
        }))
    folder = WORK_DIR / "input"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pq.write_table(catalog, folder / "products.parquet")
    pq.write_table(pa.concat_tables(chunks), folder / "events.parquet")
    as_of = datetime.fromtimestamp(world.end_ts, tz=timezone.utc)
    return (spark.read.parquet(str(folder / "products.parquet")), spark.read.parquet(str(folder / "events.parquet")),
            as_of)


def cached(name: str, frame: DataFrame) -> tuple[DataFrame, dict]:
    started = time.perf_counter()
    frame = frame.cache()
    rows = frame.count()
    seconds = round(time.perf_counter() - started, 2)
    log.info("%s: %d rows in %.1f s", name, rows, seconds)
    return frame, {"rows": rows, "seconds": seconds}


def timed(user_lists, weighted_rows: DataFrame, similar: DataFrame, params, path: Path) -> float:
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    user_lists(weighted_rows, similar, params).write.parquet(str(path))
    return round(time.perf_counter() - started, 2)


def compare(spark: SparkSession, mine: Path, theirs: Path) -> dict:
    """User by user: identical lists (ids and float scores); the same float scores
    position by position but other ids or order (ties ordered or cut differently);
    anything else."""
    a = spark.read.parquet(str(mine)).select("subject_id", F.col("product_ids").alias("a_ids"),
                                             F.col("scores").alias("a_scores"))
    b = spark.read.parquet(str(theirs)).select("subject_id", F.col("product_ids").alias("b_ids"),
                                               F.col("scores").alias("b_scores"))
    both = a.join(b, "subject_id", "full_outer")
    same_ids, same_scores = F.col("a_ids") == F.col("b_ids"), F.col("a_scores") == F.col("b_scores")
    gap = F.array_max(F.zip_with("a_scores", "b_scores", lambda x, y: F.abs(x - y)))
    row = both.agg(
        F.count(F.when(F.col("a_ids").isNotNull() & F.col("b_ids").isNotNull(), 1)).alias("users"),
        F.count(F.when(F.col("b_ids").isNull(), 1)).alias("only_current"),
        F.count(F.when(F.col("a_ids").isNull(), 1)).alias("only_baseline"),
        F.count(F.when(same_ids & same_scores, 1)).alias("identical"),
        F.count(F.when(~same_ids & same_scores, 1)).alias("tie_order_or_cut"),
        F.count(F.when(~same_scores, 1)).alias("scores_differ"),
        F.max(gap).alias("max_score_difference")).first()
    return {k: (float(v) if k == "max_score_difference" and v is not None else v) for k, v in row.asDict().items()}


def run(args: argparse.Namespace) -> dict:
    users = args.users or (20_000 if args.quick else 100_000)
    products = args.products or (2_000 if args.quick else 10_000)
    events = args.events or users * EVENTS_PER_USER
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{args.compare_with}^{{commit}}"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    # Registered: its dataclasses need it, and the old user lists have no Python UDF to ship.
    baseline = module_at(commit, "jobs/content.py", f"baseline_content_{commit[:10]}", register=True)
    spark = get_spark("bench-content")
    env = environment(spark.version)
    settings = load_conf("jobs")["content"]
    current_params, baseline_params = content.ContentParams(**settings), baseline.ContentParams(**settings)

    catalog, event_rows, as_of = world_frames(spark, users, products, events)
    setup = {}
    vectors, setup["tfidf"] = cached("tfidf vectors", content.tfidf_vectors(
        content.product_documents(catalog), current_params))
    similar, setup["similar_products"] = cached("similar products",
                                                content.similar_products(vectors, current_params))
    weighted_rows, setup["weighted_events"] = cached("weighted events", weighted(event_rows, as_of, current_params))
    touched = weighted_rows.select("user_id", "product_id").distinct()
    lengths = similar.select(F.col("subject_id").cast("long").alias("product_id"),
                             F.size("product_ids").alias("n"))
    exploded = touched.join(lengths, "product_id").agg(F.sum("n")).first()[0] or 0
    lists = content.collect_neighbour_lists(similar)
    shape = {"users": users, "products": products, "events": events, "as_of": as_of.isoformat(),
             "touched_pairs": touched.count(), "users_with_events": weighted_rows.select("user_id").distinct().count(),
             "neighbour_entries": int(len(lists.neighbours)),
             "neighbour_arrays_mb": round(sum(a.nbytes for a in lists) / 2**20, 1),
             "exploded_rows_baseline": int(exploded)}
    log.info("shape: %s", shape)

    runs = []
    implementations = {"current": (content.user_content_lists, current_params),
                       "baseline": (baseline.user_content_lists, baseline_params)}
    for number, name in enumerate(RUNS, start=1):
        user_lists, params = implementations[name]
        load = load_average()
        seconds = timed(user_lists, weighted_rows, similar, params, WORK_DIR / f"run-{number}")
        log.info("%s: %.1f s (load average %s before, %s after)", name, seconds, load, load_average())
        runs.append({"implementation": name, "seconds": seconds, "load_average_before": load,
                     "load_average_after": load_average()})
    checks = {"current_vs_baseline": compare(spark, WORK_DIR / "run-3", WORK_DIR / "run-2"),
              "current_vs_current": compare(spark, WORK_DIR / "run-3", WORK_DIR / "run-1"),
              "baseline_vs_baseline": compare(spark, WORK_DIR / "run-4", WORK_DIR / "run-2")}
    log.info("checks: %s", checks)
    spark.stop()
    current = min(r["seconds"] for r in runs if r["implementation"] == "current")
    before = min(r["seconds"] for r in runs if r["implementation"] == "baseline")
    return {"benchmark": "content", **env, "load_average_end": load_average(), "baseline_commit": commit,
            "shape": shape, "settings": settings, "setup": setup, "runs": runs,
            "speedup": round(before / current, 2), "checks": checks}


def markdown(result: dict) -> str:
    shape, setup = result["shape"], result["setup"]
    lines = [f"# Content user lists: {shape['users']:,} users, {shape['products']:,} products, "
             f"{shape['events']:,} events", "",
             f"Generated world (`jobs.generate_data`, seed {SEED}): {shape['users_with_events']:,} users with "
             f"weighted events, {shape['touched_pairs']:,} (user, product) pairs touched; neighbour lists of "
             f"{result['settings']['similar_top_n']} (real TF-IDF `similar_products`, {setup['similar_products']['rows']:,} "
             f"lists, {shape['neighbour_entries']:,} entries, {shape['neighbour_arrays_mb']} MB as flat arrays); "
             f"top_n {result['settings']['top_n']}. The baseline explodes {shape['exploded_rows_baseline']:,} "
             "(user, touched, neighbour) rows. Set-up, cached before the runs: TF-IDF "
             f"{setup['tfidf']['seconds']:.0f} s, similar products {setup['similar_products']['seconds']:.0f} s, "
             f"weighted events {setup['weighted_events']['seconds']:.0f} s.", "",
             "| run | implementation | seconds | load average before (1, 5, 15 min) | after |",
             "|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {r['implementation']} | {r['seconds']:.1f} | {r['load_average_before']} | "
              f"{r['load_average_after']} |" for i, r in enumerate(result["runs"])]
    check, again = result["checks"]["current_vs_baseline"], result["checks"]["current_vs_current"]
    old_again = result["checks"]["baseline_vs_baseline"]
    lines += ["", f"Current against the baseline of {result['baseline_commit'][:10]}, best run against best run: "
                  f"**{result['speedup']}x faster**.", "",
              f"Lists compared, every user: {check['users']:,} users in both, {check['identical']:,} identical "
              f"(ids and float scores), {check['tie_order_or_cut']:,} with the same scores position by position "
              f"but tied ids in another order or cut elsewhere, {check['scores_differ']:,} with other scores "
              f"(largest difference {check['max_score_difference']}); {check['only_current']} users only in the "
              f"current lists, {check['only_baseline']} only in the baseline's. Run to run: current "
              f"{again['identical']:,} of {again['users']:,} identical, baseline {old_again['identical']:,} of "
              f"{old_again['users']:,}.", "",
              machine_line(result) +
              f" Load average at the end: {result['load_average_end']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out = args.out or (PROJECT_ROOT / "var" / "bench" / "content-quick" if args.quick
                            else PROJECT_ROOT / "bench" / "results")
    configure_logging(args.log_level)
    result = run(args)
    write_results(args.out, "content", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
