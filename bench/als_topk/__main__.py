"""ALS on one machine, side by side: the job's conjugate-gradient fit
(``jobs.als_cg``), Spark ML's ALS fit and the ``implicit`` library's fit on the same
interactions; and, on the Spark ML model, ``ALSModel.recommendForAllUsers``
against the project's blocked top-K (``jobs.als.user_recommendations``).

    python -m bench.als_topk            # 50k users x 20k items, ~1M interactions, rank 64, 10 iterations
    python -m bench.als_topk --quick    # 10k x 5k, ~200k interactions, 5 iterations
    python -m bench.als_topk --fit-only --users 1000000 --items 100000 --interactions 13000000 --rank 32
                                        # the pipeline's size: the fits only, into als_fit.{json,md}
    python -m bench.als_topk --help

Interactions are generated with NumPy (``interactions``): skewed user activity
(log-normal) and item popularity (Zipf-like), duplicates summed, ``rating =
log1p(summed event weight)`` as the job's confidence. The job's solver
(``jobs.als_cg.fit``, blocks as the job chooses them) fits twice on the cached
frame: the first fit pays for the Python workers' start and imports, the second
does not. Spark ML fits with ``jobs.als.fit_als`` (implicit prefs, one block per
core), once, in the same JVM, after them.

Both top-N methods list 100 items per user with no purchase filter and are timed
to the same end: every list collected to the driver as Arrow. The blocked method's
time includes collecting and broadcasting the item factors. The lists are then
compared user by user: ids identical, ids equal but ordered differently, or ids
different; a difference is counted as a tie when the two lists' scores agree
position by position within float tolerance (the two sides sum the dot products
in different orders, so near-equal scores can swap).

implicit: the same (user, item) matrix with values ``1 + alpha * rating`` (its alpha
1, as ``bench/quality/implicit_als.py`` explains), the same rank, iterations,
regularisation value and seed, as many threads as Spark has cores, after Spark has
stopped. Both Spark fits' times are set against its. Results: ``<out>/als_topk.json``
and ``<out>/als_topk.md``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.settings import PROJECT_ROOT

from jobs import als, als_cg
from jobs.cli import configure_logging
from jobs.spark_session import get_spark

from bench.als_topk.compare import compare_lists, rfau_lists, blocked_lists
from bench.als_topk.interactions import generate
from bench.quality.environment import environment, machine_line, write_results
from bench.quality.timing import timed
from bench.snapshot_build.peak_rss import PeakRss, jvm_pid

log = logging.getLogger("bench.als_topk")

DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
QUICK_OUT = Path(tempfile.gettempdir()) / "bench-als-topk-quick"
FULL = {"users": 50_000, "items": 20_000, "interactions": 1_000_000, "iterations": 10}
QUICK = {"users": 10_000, "items": 5_000, "interactions": 200_000, "iterations": 5}
TARGET_FIT_RATIO = 3.0  # issue 6: the job's ALS within 3x implicit's time


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.als_topk", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10k users x 5k items, 5 iterations (a smoke run)")
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--items", type=int, default=None)
    p.add_argument("--interactions", type=int, default=None, help="drawn before duplicates are summed")
    p.add_argument("--rank", type=int, default=64, help="factors (default 64, as in issue 6)")
    p.add_argument("--iterations", type=int, default=None, help="ALS iterations (default 10, --quick 5)")
    p.add_argument("--reg-param", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=10.0)
    p.add_argument("--top", type=int, default=100, help="items per user (default 100)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-implicit", action="store_true", help="skip the implicit library's fit")
    p.add_argument("--fit-only", action="store_true",
                   help="the job's and implicit's fits only, no Spark ML and no top-N (recommendForAllUsers "
                        "takes hours at 1M users); writes als_fit.json/.md")
    p.add_argument("--driver-memory", default=None, help="spark.driver.memory (default: conf/spark.toml's)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for the results (default bench/results; --quick {QUICK_OUT})")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def fit_implicit(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, shape: tuple[int, int],
                 params: als.AlsParams, threads: int, recommend_all: bool = True) -> dict:
    import implicit
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    matrix = csr_matrix(((1.0 + params.alpha * ratings).astype(np.float32), (users, items)), shape=shape)
    # implicit runs its own threads: a BLAS pool under them slows it down many times.
    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(
            factors=params.rank, iterations=params.max_iter, regularization=params.reg_param, alpha=1.0,
            use_gpu=False, num_threads=threads, random_state=params.seed)
        with timed(f"implicit {implicit.__version__}: fit") as fit:
            model.fit(matrix, show_progress=False)
        result = {"version": implicit.__version__, "threads": threads, "fit_seconds": round(fit.seconds, 2)}
        if recommend_all:
            with timed("implicit: recommend for all users") as recommend:
                model.recommend(np.arange(shape[0]), matrix, N=params.top_n, filter_already_liked_items=False)
            result["recommend_all_seconds"] = round(recommend.seconds, 2)
    return result


def spark_ml_and_top_n(spark, frame, params: als.AlsParams, result: dict) -> None:
    """Spark ML's fit, then recommendForAllUsers against the blocked top-K on its factors."""
    pid = jvm_pid(spark)
    with PeakRss(pid) as memory, timed(f"Spark ALS fit (rank {params.rank}, {params.max_iter} iterations)") as fit:
        model = als.fit_als(frame, params)
        model.userFactors.cache().count()
        model.itemFactors.cache().count()
    result["spark_fit"] = {"seconds": round(fit.seconds, 2), "peak_rss_mb": memory.mb(),
                           "blocks": spark.sparkContext.defaultParallelism}

    with PeakRss(pid) as memory, timed(f"blocked top-{params.top_n} (jobs.als.user_recommendations)") as watch:
        ours = blocked_lists(spark, model, params)
    result["blocked"] = {"seconds": round(watch.seconds, 2), "peak_rss_mb": memory.mb(), "users": len(ours[0])}
    with PeakRss(pid) as memory, timed(f"recommendForAllUsers({params.top_n})") as watch:
        theirs = rfau_lists(model, params.top_n)
    result["recommend_for_all_users"] = {"seconds": round(watch.seconds, 2), "peak_rss_mb": memory.mb(),
                                         "users": len(theirs[0])}
    result["speedup"] = round(result["recommend_for_all_users"]["seconds"] / result["blocked"]["seconds"], 2)
    with timed("lists compared"):
        result["comparison"] = compare_lists(ours, theirs)
    log.info("comparison: %s", result["comparison"])


def run(args: argparse.Namespace) -> dict:
    size = QUICK if args.quick else FULL
    n_users, n_items = args.users or size["users"], args.items or size["items"]
    draws = args.interactions or size["interactions"]
    params = als.AlsParams(rank=args.rank, max_iter=args.iterations or size["iterations"],
                           reg_param=args.reg_param, alpha=args.alpha, top_n=args.top,
                           exclude_purchased=False, seed=args.seed)
    conf = {"spark.driver.memory": args.driver_memory} if args.driver_memory else {}
    spark = get_spark("bench-als-topk", {"conf": conf})
    result = {"benchmark": "als_fit" if args.fit_only else "als_topk", "quick": args.quick,
              **environment(spark.version), "params": asdict(params),
              "targets": {"fit_time_ratio_job_over_implicit": TARGET_FIT_RATIO}}
    with timed("interactions generated") as watch:
        users, items, ratings = generate(n_users, n_items, draws, args.seed)
    result["data"] = {"users": int(users.max()) + 1, "items": int(items.max()) + 1, "pairs": len(users),
                      "draws": draws, "seconds": round(watch.seconds, 2)}
    log.info("data: %s", result["data"])
    frame = spark.createDataFrame(pa.table({"user": users, "item": items, "rating": ratings})).cache()
    frame.count()

    sc = spark.sparkContext
    blocks = als_cg.block_count(len(users), als_cg.task_slots(sc.master, sc.defaultParallelism))
    result["cg_fit"] = {"seconds": [], "blocks": blocks}
    for attempt in ("first", "second"):
        with timed(f"the job's ALS fit (jobs.als_cg, {attempt})") as fit:
            als_cg.fit(frame, n_users, n_items, params.rank, params.max_iter, params.reg_param, params.alpha,
                       params.seed)
        result["cg_fit"]["seconds"].append(round(fit.seconds, 2))
    if not args.fit_only:
        spark_ml_and_top_n(spark, frame, params, result)
    frame.unpersist()
    spark.stop()

    if args.no_implicit:
        result["implicit"] = {"skipped": "--no-implicit"}
    else:
        try:
            result["implicit"] = fit_implicit(users, items, ratings, (n_users, n_items), params,
                                              threads=os.cpu_count() or 1, recommend_all=not args.fit_only)
            fit_seconds = result["implicit"]["fit_seconds"]
            if "spark_fit" in result:
                result["fit_time_ratio_spark_over_implicit"] = round(
                    result["spark_fit"]["seconds"] / fit_seconds, 2)
            result["fit_time_ratio_cg_over_implicit"] = [round(s / fit_seconds, 2)
                                                         for s in result["cg_fit"]["seconds"]]
        except ImportError as exc:  # a project dependency, so only in a broken install
            result["implicit"] = {"skipped": f"not installed ({exc})"}
    return result


def markdown(result: dict) -> str:
    data, params = result["data"], result["params"]
    top = params["top_n"]
    title = "ALS fit" if result["benchmark"] == "als_fit" else f"ALS fit and top-{top} for all users"
    lines = [f"# {title}: {data['users']:,} users x {data['items']:,} items, "
             f"{data['pairs']:,} interactions, rank {params['rank']}, {params['max_iter']} iterations", "",
             "| step | seconds | note |", "|---|---|---|"]
    imp, cg = result.get("implicit", {}), result["cg_fit"]
    target = result["targets"]["fit_time_ratio_job_over_implicit"]
    ratios = result.get("fit_time_ratio_cg_over_implicit", [None] * len(cg["seconds"]))
    for attempt, seconds, ratio in zip(("first", "second"), cg["seconds"], ratios):
        note = f"{cg['blocks']} blocks a side" if attempt == "first" else ""
        if ratio is not None:
            note += f"{'; ' if note else ''}/ implicit = **{ratio:.1f}x** (target <= {target:.0f}x)"
        lines.append(f"| the job's ALS fit (`jobs.als_cg`, conjugate gradient), {attempt} | {seconds:.1f} | {note} |")
    if "spark_fit" in result:
        ratio = result.get("fit_time_ratio_spark_over_implicit")
        lines.append(f"| Spark ML ALS fit | {result['spark_fit']['seconds']:.1f} | "
                     f"{result['spark_fit']['blocks']} blocks" + (f"; / implicit = {ratio:.1f}x |" if ratio else " |"))
    if "fit_seconds" in imp:
        lines.append(f"| implicit {imp['version']} fit ({imp['threads']} threads) | {imp['fit_seconds']:.1f} | |")
    else:
        lines.append(f"| implicit | - | {imp.get('skipped')} |")
    if "comparison" in result:
        cmp_ = result["comparison"]
        lines += [f"| `recommendForAllUsers({top})` (Spark ML model) | "
                  f"{result['recommend_for_all_users']['seconds']:.1f} | collected |",
                  f"| blocked top-{top} (`jobs.als.user_recommendations`), same factors | "
                  f"{result['blocked']['seconds']:.1f} | collected; **{result['speedup']:.1f}x faster** |"]
        if "recommend_all_seconds" in imp:
            lines.append(f"| implicit recommend, all users | {imp['recommend_all_seconds']:.1f} | |")
        lines += ["", f"Lists compared ({cmp_['users']:,} users, {top} items each): "
                      f"{cmp_['identical']:,} identical; {cmp_['same_ids_other_order']:,} same ids in another order; "
                      f"{cmp_['different_ids']:,} with different ids, of which {cmp_['different_ids_ties']:,} are "
                      f"ties (scores equal position by position within {cmp_['tolerance']}); largest score "
                      f"difference at equal positions {cmp_['max_score_difference']:.2e}."]
    lines += ["", machine_line(result), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    result = run(args)
    write_results(out, result["benchmark"], result, markdown(result))
    log.info("written %s and %s", out / f"{result['benchmark']}.json", out / f"{result['benchmark']}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
