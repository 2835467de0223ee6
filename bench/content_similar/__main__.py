"""Similar products at scale: ``jobs.content.similar_products`` (gather, then NumPy)
against the Spark formulation it replaced (bench/content_similar/spark_formulation.py),
side by side in one SparkSession on the same cached TF-IDF vectors.

    python -m bench.content_similar                          # 10k products
    python -m bench.content_similar --quick                  # 2k products
    python -m bench.content_similar --numpy-only 100000      # and the NumPy version alone at 100k
    python -m bench.content_similar --help

Input: the catalog of a world from ``jobs.generate_data`` (seed 42, written to Parquet
under ``var/bench/content_similar/input`` and read back), the [content] settings of
conf/jobs.toml. Before any timing the product documents and TF-IDF vectors are
computed and cached. Each implementation then builds every product's list from them
and writes it as Parquet under ``var/bench/content_similar/run-<n>``: current,
baseline, current, baseline (alternated: the load of a shared machine changes; the
first run also warms the JVM); the ratio is best against best. The current version's
time includes collecting the vectors to the driver and making the DataFrame.

Check: every list of the second current run against the first baseline run's,
product by product (ids and float32 scores), the lists that differ shown; and each
implementation's two runs against each other. Results: ``<out>/content_similar.json``
and ``content_similar.md``.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.settings import PROJECT_ROOT, load_conf

from jobs import content
from jobs.cli import configure_logging
from jobs.generate_data import build_world, products_table
from jobs.spark_session import get_spark

from bench.content.__main__ import cached, compare
from bench.content_similar.spark_formulation import spark_similar_products
from bench.quality.environment import environment, load_average, machine_line, write_results

log = logging.getLogger("bench.content_similar")

SEED = 42
WORK_DIR = PROJECT_ROOT / "var" / "bench" / "content_similar"
RUNS = ("current", "baseline", "current", "baseline")
SHOWN_DIFFERENCES = 10


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.content_similar", description=__doc__.split("\n\n")[0])
    p.add_argument("--products", type=int, default=None, help="products (default 10k, --quick 2k)")
    p.add_argument("--quick", action="store_true", help="2k products")
    p.add_argument("--numpy-only", type=int, default=0, metavar="PRODUCTS",
                   help="also time the NumPy version alone (twice) on a catalog of this many products")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for content_similar.json/.md (default bench/results; "
                        "var/bench/content_similar-quick with --quick)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def catalog_frame(spark: SparkSession, products: int) -> DataFrame:
    """The catalog of a generated world as product_documents reads it, written to Parquet
    and read back (a frame made from local data would carry its rows in every task's lineage)."""
    world = build_world(10, products, SEED)
    catalog = products_table(world.catalog).select(["product_id", "category", "price", "active", "other_features"])
    folder = WORK_DIR / f"input-{products}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pq.write_table(catalog, folder / "products.parquet")
    return spark.read.parquet(str(folder / "products.parquet"))


def timed(similar, vectors: DataFrame, params, path: Path) -> float:
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    similar(vectors, params).write.parquet(str(path))
    return round(time.perf_counter() - started, 2)


def differences(spark: SparkSession, mine: Path, theirs: Path, limit: int) -> list[dict]:
    """Up to ``limit`` products whose lists differ: both lists, and the first position where they do."""
    a = spark.read.parquet(str(mine)).select("subject_id", F.col("product_ids").alias("a_ids"),
                                             F.col("scores").alias("a_scores"))
    b = spark.read.parquet(str(theirs)).select("subject_id", F.col("product_ids").alias("b_ids"),
                                               F.col("scores").alias("b_scores"))
    differ = (a.join(b, "subject_id", "full_outer")
              .where(~F.coalesce((F.col("a_ids") == F.col("b_ids")) & (F.col("a_scores") == F.col("b_scores")),
                                 F.lit(False)))
              .orderBy(F.col("subject_id").cast("long")).limit(limit).collect())
    shown = []
    for row in differ:
        pairs = list(zip(row["a_ids"] or [], row["a_scores"] or [], row["b_ids"] or [], row["b_scores"] or []))
        first = next((i for i, (x, s, y, t) in enumerate(pairs) if (x, s) != (y, t)), len(pairs))
        shown.append({"subject_id": row["subject_id"], "first_difference": first,
                      "current": list(zip(row["a_ids"] or [], row["a_scores"] or []))[max(first - 1, 0):first + 3],
                      "baseline": list(zip(row["b_ids"] or [], row["b_scores"] or []))[max(first - 1, 0):first + 3]})
    return shown


def side_by_side(spark: SparkSession, products: int, params: content.ContentParams) -> dict:
    vectors, setup = cached("tfidf vectors", content.tfidf_vectors(
        content.product_documents(catalog_frame(spark, products)), params))
    catalog = content.collect_sparse_catalog(vectors)
    shape = {"products": products, "vectors": len(catalog.product_ids), "postings": int(len(catalog.terms)),
             "catalog_arrays_mb": round(sum(a.nbytes for a in catalog) / 2**20, 1)}
    log.info("shape: %s", shape)
    implementations = {"current": content.similar_products, "baseline": spark_similar_products}
    runs = []
    for number, name in enumerate(RUNS, start=1):
        load = load_average()
        seconds = timed(implementations[name], vectors, params, WORK_DIR / f"run-{number}")
        log.info("%s: %.1f s (load average %s before, %s after)", name, seconds, load, load_average())
        runs.append({"implementation": name, "seconds": seconds, "load_average_before": load,
                     "load_average_after": load_average()})
    checks = {"current_vs_baseline": compare(spark, WORK_DIR / "run-3", WORK_DIR / "run-2"),
              "current_vs_current": compare(spark, WORK_DIR / "run-3", WORK_DIR / "run-1"),
              "baseline_vs_baseline": compare(spark, WORK_DIR / "run-4", WORK_DIR / "run-2")}
    log.info("checks: %s", checks)
    vectors.unpersist()
    best = {name: min(r["seconds"] for r in runs if r["implementation"] == name) for name in implementations}
    return {"shape": shape, "setup": {"tfidf": setup}, "runs": runs,
            "speedup": round(best["baseline"] / best["current"], 2), "checks": checks,
            "differences": differences(spark, WORK_DIR / "run-3", WORK_DIR / "run-2", SHOWN_DIFFERENCES)}


def numpy_alone(spark: SparkSession, products: int, params: content.ContentParams) -> dict:
    """The NumPy version twice on a bigger catalog: collect, rank, and writing the lists."""
    vectors, setup = cached(f"tfidf vectors ({products:,} products)", content.tfidf_vectors(
        content.product_documents(catalog_frame(spark, products)), params))
    started = time.perf_counter()
    catalog = content.collect_sparse_catalog(vectors)
    collect_seconds = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    lengths = content.similar_lists(catalog, params.block_size, params.similar_top_n,
                                    content.RESCORED_PER_LIST * params.similar_top_n)[1]
    numpy_seconds = round(time.perf_counter() - started, 2)
    runs = []
    for number in (1, 2):
        load = load_average()
        seconds = timed(content.similar_products, vectors, params, WORK_DIR / f"numpy-only-{number}")
        log.info("numpy alone, %d products: %.1f s (load average %s before)", products, seconds, load)
        runs.append({"seconds": seconds, "load_average_before": load, "load_average_after": load_average()})
    vectors.unpersist()
    return {"products": products, "vectors": len(catalog.product_ids), "postings": int(len(catalog.terms)),
            "lists": int(len(lengths)), "setup": {"tfidf": setup}, "collect_seconds": collect_seconds,
            "similar_lists_seconds": numpy_seconds, "runs": runs}


def run(args: argparse.Namespace) -> dict:
    products = args.products or (2_000 if args.quick else 10_000)
    spark = get_spark("bench-content-similar")
    env = environment(spark.version)
    settings = load_conf("jobs")["content"]
    params = content.ContentParams(**settings)
    result = {"benchmark": "content_similar", **env, "settings": settings,
              **side_by_side(spark, products, params)}
    if args.numpy_only:
        result["numpy_only"] = numpy_alone(spark, args.numpy_only, params)
    spark.stop()
    return {**result, "load_average_end": load_average()}


def markdown(result: dict) -> str:
    shape, settings = result["shape"], result["settings"]
    lines = [f"# Similar products: {shape['products']:,} products", "",
             f"Generated catalog (`jobs.generate_data`, seed {SEED}): {shape['vectors']:,} non-zero TF-IDF vectors, "
             f"{shape['postings']:,} postings ({shape['catalog_arrays_mb']} MB as flat arrays); similar_top_n "
             f"{settings['similar_top_n']}, block_size {settings['block_size']}, {content.RESCORED_PER_LIST} x "
             f"similar_top_n rescored. Set-up, cached before the runs: TF-IDF "
             f"{result['setup']['tfidf']['seconds']:.0f} s. Each run builds every list and writes it as Parquet.", "",
             "| run | implementation | seconds | load average before (1, 5, 15 min) | after |",
             "|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {r['implementation']} | {r['seconds']:.1f} | {r['load_average_before']} | "
              f"{r['load_average_after']} |" for i, r in enumerate(result["runs"])]
    check, again = result["checks"]["current_vs_baseline"], result["checks"]["current_vs_current"]
    old_again = result["checks"]["baseline_vs_baseline"]
    lines += ["", "Current (gather, then NumPy) against the baseline (the Spark formulation, "
                  f"bench/content_similar/spark_formulation.py), best run against best run: "
                  f"**{result['speedup']}x faster**.", "",
              f"Lists compared, every product: {check['users']:,} products in both, {check['identical']:,} "
              f"identical (ids and float32 scores), {check['tie_order_or_cut']:,} with the same scores position "
              f"by position but tied ids in another order or cut elsewhere, {check['scores_differ']:,} with other "
              f"scores (largest difference {check['max_score_difference']}); {check['only_current']} products only "
              f"in the current lists, {check['only_baseline']} only in the baseline's. Run to run: current "
              f"{again['identical']:,} of {again['users']:,} identical, baseline {old_again['identical']:,} of "
              f"{old_again['users']:,}."]
    if result["differences"]:
        lines += ["", "Lists that differ (first ones by id; (id, score) from one position before the first "
                      "difference):", ""]
        lines += [f"- product {d['subject_id']}, position {d['first_difference']}: current {d['current']}, "
                  f"baseline {d['baseline']}" for d in result["differences"]]
    alone = result.get("numpy_only")
    if alone:
        lines += ["", f"## The NumPy version alone: {alone['products']:,} products", "",
                  f"{alone['vectors']:,} vectors, {alone['postings']:,} postings, {alone['lists']:,} lists. TF-IDF "
                  f"set-up {alone['setup']['tfidf']['seconds']:.0f} s. Collecting the vectors "
                  f"{alone['collect_seconds']:.1f} s, `similar_lists` (NumPy alone) "
                  f"{alone['similar_lists_seconds']:.1f} s; `similar_products` end to end, written as Parquet:", "",
                  "| run | seconds | load average before | after |", "|---|---|---|---|"]
        lines += [f"| {i + 1} | {r['seconds']:.1f} | {r['load_average_before']} | {r['load_average_after']} |"
                  for i, r in enumerate(alone["runs"])]
    lines += ["", machine_line(result) +
              f" Load average at the end: {result['load_average_end']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out = args.out or (PROJECT_ROOT / "var" / "bench" / "content_similar-quick" if args.quick
                            else PROJECT_ROOT / "bench" / "results")
    configure_logging(args.log_level)
    result = run(args)
    write_results(args.out, "content_similar", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
