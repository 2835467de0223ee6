"""EASE's two methods side by side on the real samples: the exact inverse (the
``max_items`` products with the most users) and the scalable ``knn`` (pruned shrunk
cosine over every product with ``min_item_users`` users, computed with Spark), with
conf's settings, on each protocol's validation split (carved from its training part:
the test part is never read). What the scalable method costs in quality where the
exact one still fits, and what each costs in time.

    python -m bench.ease_variants          # results: bench/results/ease_variants.{json,md}
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from schemas.settings import PROJECT_ROOT, deep_merge, load_conf

from jobs import ease, tuning
from jobs.cli import configure_logging
from jobs.spark_session import get_spark

from bench.quality.datasets import default_data_root, load_online_retail, load_taobao
from bench.quality.environment import environment, machine_line, write_results
from bench.quality.protocols import PROTOCOLS, evaluation_params

METHODS = ("exact", "knn")
LOADERS = {"taobao": load_taobao, "online-retail": load_online_retail}
DEFAULT_PROTOCOLS = ("taobao-temporal", "taobao-random-5core", "online-retail-temporal", "online-retail-random")


def run_protocol(name: str, dataset, conf: dict) -> dict:
    """Both methods' validation NDCG/Recall@k, products listed and seconds on one protocol."""
    protocol = PROTOCOLS[name]
    settings = deep_merge(conf, protocol.settings)
    params = evaluation_params(settings, protocol)
    budget = tuning.params_from_settings(settings["tuning"])
    validation = tuning.prepare_validation(dataset.interactions, dataset.products, dataset.as_of, settings, params,
                                           budget)
    split, users = validation.split, validation.split.held_out.select("user_id")
    rows = {}
    for method in METHODS:
        chosen = replace(ease.params_from_settings(settings["ease"]), method=method)
        started = time.perf_counter()
        lists = ease.ease_candidates(split.train, split.train_until, chosen, product_lists=False,
                                     for_users=users).localCheckpoint()
        listed = lists.selectExpr("explode(product_ids)").distinct().count()
        seconds = time.perf_counter() - started
        metrics, scored = tuning.score_lists(lists, ease.ALGORITHM, validation)
        rows[method] = {"metrics": metrics, "users": scored, "products_listed": listed, "seconds": round(seconds, 1)}
    return {"protocol": name, "description": protocol.description, "k": budget.k, "methods": rows}


def report(result: dict) -> str:
    lines = ["# EASE: the exact inverse against the scalable knn", "",
             "Conf's `[ease]` settings, `method` forced; each protocol's validation split (carved from its training "
             "part; the test part is not read). Fallback to global popularity where a user has no list, as served.",
             "", "| protocol | method | NDCG@10 | Recall@10 | knn / exact NDCG | products listed | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for run in result["protocols"]:
        methods = run["methods"]
        ndcg, recall = f"ndcg@{run['k']}", f"recall@{run['k']}"
        exact = methods["exact"]["metrics"][ndcg]
        for method, row in methods.items():
            ratio = f"{row['metrics'][ndcg] / exact:.2f}" if method == "knn" and exact else ""
            lines.append(f"| {run['protocol']} | {method} | {row['metrics'][ndcg]:.4f} | {row['metrics'][recall]:.4f} "
                         f"| {ratio} | {row['products_listed']:,} | {row['seconds']:.1f} |")
    lines += ["", machine_line(result["environment"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ease_variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", action="append", choices=DEFAULT_PROTOCOLS,
                   help="one protocol (repeatable); default: all four")
    p.add_argument("--data-root", type=Path, default=default_data_root())
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    spark = get_spark("bench-ease-variants")
    env = environment(spark.version)
    conf, datasets, runs = load_conf("jobs"), {}, []
    for name in args.protocol or DEFAULT_PROTOCOLS:
        source = PROTOCOLS[name].dataset
        if source not in datasets:
            datasets[source] = LOADERS[source](spark, args.data_root)
        runs.append(run_protocol(name, datasets[source], conf))
    result = {"protocols": runs, "environment": env}
    write_results(args.out, "ease_variants", result, report(result))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
