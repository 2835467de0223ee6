"""Offline evaluation: which algorithm serves which users best, measured on held-out data.

Protocols (``--split``):

``temporal`` (default)
    Hold out the last ``holdout_days`` before ``--as-of``; every algorithm trains on
    the rest with its clock set to the split time, so decay and popularity see
    nothing from the future.
``leave_last_out``
    Each user's last interaction is held out; training keeps everyone's other rows.
    Other users' later rows do leak into training here: use it to compare with
    published tables, not to pick a production policy.
``random``
    Per user, a seeded random ``test_fraction`` of the products they interacted with
    (every row of a held-out user-product pair) is held out; the clock stays at
    ``--as-of``. The protocol of public benchmark tables (MovieLens, 75/25); time
    leaks both ways, so again not for a production policy.

``min_interactions`` (k-core, off at 0) first keeps only the users and products with
at least that many events, repeatedly, until both hold: on a sparse log most
products are seen once, and no collaborative method can place those.

A user is scored when they have held-out products they had not bought before the
split; past ``max_scored_users`` of them, a seeded sample is scored. Each algorithm
is scored as the server would answer: the user's list when there is one, else the
global popular list. ``global_popular`` -- the global list for everyone -- is always
scored too, as the baseline the others must beat (the ``popular`` algorithm's
per-user lists already favour the user's categories). Users are split into segments
by their training interactions: ``new`` (none), ``light`` (at most ``light_max_interactions``)
and ``heavy``; segment ``all`` pools them.

Writes (under ``--data-dir``): rows to the ``evaluations`` Delta table (one per run,
algorithm, segment, k, metric), ``evaluation/policy.json`` (NDCG@10 per segment
and algorithm: the priors the server's switching will start from) and
``evaluation/report/report.html`` with its plots (``jobs.evaluation_report``).
Algorithms run with conf's settings, overlaid by ``evaluation/tuned.json`` when a
tuning run left one (``jobs.tuned``): the evaluation scores what the next nightly
run will serve. The ranker, like the nightly one, is retrained only every
``[ranked] retrain_days`` (on the temporal split; its models in ``evaluation/ranker/``):
the evaluation then scores a model as old as the one served.

Run: ``python -m jobs.evaluation --help`` or ``spark-submit jobs/evaluation.py --help``.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from schemas.fields import spark_schema
from schemas.settings import load_conf
from schemas.storage import Location, staged_locally
from schemas.tables import EVALUATIONS

from jobs import ranked
from jobs.cli import configure_logging, data_paths, job_parser, resolve_as_of
from jobs.delta_tables import ensure_table
from jobs.evaluation_report import write_report
from jobs.generators import generator_lists, materialised
from jobs.interactions import read_interactions, read_profiles
from jobs.paths import DataPaths
from jobs.scoring import BASELINE, ProductShares, product_shares, score, served_lists
from jobs.segments import activity_segment
from jobs.spark_session import get_spark
from jobs.tuned import read_tuned, with_tuned, write_json_atomically

log = logging.getLogger(__name__)

SPLITS = ("temporal", "leave_last_out", "random")
# What the evaluation can train; popular is required (it is every fallback).
ALGORITHMS = ("popular", "als", "ease", "content", "hybrid", "ranked")
SEGMENTS = ("new", "light", "heavy")
POLICY_METRIC, POLICY_K = "ndcg", 10
RANKER_DIR = Path("evaluation") / "ranker"  # the evaluation's own rankers (trained before its split)
REPORT_DIR = Path("evaluation") / "report"
# Rounds of k-core filtering before giving up on a fixed point (each is two small
# aggregations; real logs converge in a handful).
MAX_K_CORE_ROUNDS = 20


@dataclass(frozen=True)
class EvaluationParams:
    split: str = "temporal"
    holdout_days: float = 2.0
    ks: tuple[int, ...] = (5, 10, 20)
    light_max_interactions: int = 5
    algorithms: tuple[str, ...] = ("popular", "als", "ease", "content", "hybrid")
    relevant_event_types: tuple[str, ...] = ("view", "click", "wishlist", "add_to_cart", "purchase")
    test_fraction: float = 0.25   # random split: share of each user's products held out
    min_interactions: int = 0     # k-core filter before splitting; 0 = off
    max_scored_users: int = 100_000  # a seeded sample of the held-out users beyond this; 0 = all
    seed: int = 42                # random split, and the sample of scored users

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        if not self.holdout_days > 0 or not self.ks or min(self.ks) < 1:
            raise ValueError("holdout_days must be positive and every k at least 1")
        if not 0 < self.test_fraction < 1:
            raise ValueError("test_fraction must be between 0 and 1")
        if self.min_interactions < 0 or self.max_scored_users < 0:
            raise ValueError("min_interactions and max_scored_users must be >= 0")
        unknown = set(self.algorithms) - set(ALGORITHMS)
        if unknown or "popular" not in self.algorithms:
            raise ValueError("algorithms must include popular (the fallback) and name only known ones")


@dataclass
class Split:
    train: DataFrame
    held_out: DataFrame  # user_id, relevant (array of product ids)
    train_until: datetime  # the clock the algorithms train with


# --- pure transforms --------------------------------------------------------

def temporal_split(rows: DataFrame, as_of: datetime, params: EvaluationParams) -> Split:
    """Rows before ``as_of - holdout_days`` train; rows from then until ``as_of`` are held out."""
    split_time = as_of - timedelta(days=params.holdout_days)
    rows = rows.where(F.col("timestamp") <= F.lit(as_of))
    train = rows.where(F.col("timestamp") < F.lit(split_time))
    test = rows.where(F.col("timestamp") >= F.lit(split_time))
    return Split(train, held_out_products(train, test, params), split_time)


def leave_last_out_split(rows: DataFrame, as_of: datetime, params: EvaluationParams) -> Split:
    """Each user's last relevant interaction (ties: larger product id) is held out."""
    rows = rows.where(F.col("timestamp") <= F.lit(as_of))
    last = Window.partitionBy("user_id").orderBy(F.col("timestamp").desc(), F.col("product_id").desc())
    ranked = rows.withColumn("_n", F.row_number().over(last))
    relevant = F.col("event_type").isin(*params.relevant_event_types)
    test = ranked.where((F.col("_n") == 1) & relevant).drop("_n")
    train = ranked.where(F.col("_n") > 1).drop("_n")
    return Split(train, held_out_products(train, test, params), as_of)


def random_split(rows: DataFrame, as_of: datetime, params: EvaluationParams) -> Split:
    """Per user, ``floor(test_fraction * n)`` of their ``n`` relevant products, chosen by
    a seeded hash, are held out with all their rows; the rest trains."""
    rows = rows.where(F.col("timestamp") <= F.lit(as_of))
    pairs = (rows.where(F.col("event_type").isin(*params.relevant_event_types))
             .select("user_id", "product_id").distinct()
             .withColumn("_draw", F.xxhash64(F.lit(params.seed), "user_id", "product_id")))
    per_user = Window.partitionBy("user_id")
    held = (pairs.withColumn("_n", F.row_number().over(per_user.orderBy("_draw", "product_id")))
            .withColumn("_size", F.count("*").over(per_user))
            .where(F.col("_n") <= F.floor(F.col("_size") * F.lit(params.test_fraction)))
            .select("user_id", "product_id"))
    train = rows.join(held, ["user_id", "product_id"], "left_anti")
    test = rows.join(held, ["user_id", "product_id"], "left_semi")
    return Split(train, held_out_products(train, test, params), as_of)


def k_core(rows: DataFrame, k: int) -> DataFrame:
    """``rows`` of the users and products that each have at least ``k`` of them, after
    dropping the others repeatedly (dropping a product can take a user below ``k``)."""
    if k <= 1:
        return rows
    for _ in range(MAX_K_CORE_ROUNDS):
        before = rows.count()
        for key in ("user_id", "product_id"):
            enough = rows.groupBy(key).count().where(F.col("count") >= k).select(key)
            rows = rows.join(enough, key, "left_semi")
        rows = rows.localCheckpoint()  # keeps each round's plan from nesting the last
        if rows.count() == before:
            return rows
    raise ValueError(f"{k}-core filtering did not settle in {MAX_K_CORE_ROUNDS} rounds")


def split_rows(rows: DataFrame, as_of: datetime, params: EvaluationParams) -> Split:
    """The configured protocol, after the k-core filter."""
    splitter = {"temporal": temporal_split, "leave_last_out": leave_last_out_split, "random": random_split}
    return splitter[params.split](k_core(rows, params.min_interactions), as_of, params)


def held_out_products(train: DataFrame, test: DataFrame, params: EvaluationParams) -> DataFrame:
    """``(user_id, relevant)``: held-out products of relevant types, minus what the user
    bought in training (lists leave purchases out, so those could never be hit)."""
    bought = train.where(F.col("event_type") == "purchase").select("user_id", "product_id").distinct()
    return (test.where(F.col("event_type").isin(*params.relevant_event_types))
            .select("user_id", "product_id").distinct()
            .join(bought, ["user_id", "product_id"], "left_anti")
            .groupBy("user_id").agg(F.array_sort(F.collect_list("product_id")).alias("relevant")))


def scored_users(held_out: DataFrame, max_users: int, seed: int) -> DataFrame:
    """``held_out`` itself, or the ``max_users`` of its users first by a seeded hash (the
    same users for the same seed). Past ~100k users the means barely move (their standard
    error is already ~0.001), while each algorithm's lists for the users scored cost
    about what the nightly run's cost: at 10M events ~900k users were held out."""
    if max_users <= 0:
        return held_out
    return held_out.orderBy(F.xxhash64(F.lit(seed), "user_id"), "user_id").limit(max_users)


def user_segments(train: DataFrame, users: DataFrame, params: EvaluationParams) -> DataFrame:
    """``(user_id, segment)`` for ``users`` by their number of training interactions."""
    counts = train.groupBy("user_id").agg(F.count("*").alias("n"))
    segment = activity_segment(F.coalesce(F.col("n"), F.lit(0)), params.light_max_interactions)
    return users.select("user_id").join(counts, "user_id", "left").select("user_id", segment.alias("segment"))


# --- training every algorithm on the training part ---------------------------

def train_all(train: DataFrame, products: DataFrame, train_until: datetime, settings: dict,
              algorithms: tuple[str, ...], for_users: DataFrame | None = None,
              profiles: DataFrame | None = None,
              ranker_dir: Location | None = None) -> tuple[DataFrame, ranked.RankerModel | None]:
    """User lists (and the global popular list) of every algorithm, trained on ``train`` only
    (``jobs.generators``; ``for_users`` as there), and the ranker when ``ranked`` is one:
    it learns inside ``train`` too, its labels being the last ``label_days`` of it.

    ``ranker_dir``: where earlier evaluations saved their rankers; one trained at most
    ``retrain_days`` before ``train_until`` (so on data before it) is reused, as the
    nightly job reuses its own, and a new one is saved there. Only for splits where
    nothing held out precedes ``train_until`` (temporal)."""
    lists = generator_lists(train, products, train_until, settings,
                            tuple(a for a in algorithms if a != ranked.ALGORITHM), for_users=for_users)
    if ranked.ALGORITHM not in algorithms:
        return lists, None
    params = ranked.params_from_settings(settings)
    model = ranked.trained_or_reused(train, products, profiles, train_until, params, ranker_dir)
    lists = lists.unionByName(materialised(ranked.ALGORITHM, lambda: ranked.ranked_lists(
        lists, train, products, profiles, train_until, model, params)))
    return lists, model


# --- I/O edges --------------------------------------------------------------

@dataclass
class PreparedSplit:
    """A split, materialised, with the scored users' segments: what scoring reads."""
    train: DataFrame
    held_out: DataFrame
    segments: DataFrame
    train_until: datetime
    shares: ProductShares  # what novelty reads


def prepare_split(rows: DataFrame, as_of: datetime, params: EvaluationParams) -> PreparedSplit:
    started = time.monotonic()
    split = split_rows(rows, as_of, params)
    train = split.train.localCheckpoint()
    held_out = scored_users(split.held_out, params.max_scored_users, params.seed).localCheckpoint()
    segments = user_segments(train, held_out, params).localCheckpoint()
    shares = product_shares(train)
    log.info("%s split: %d training rows, %d users scored (%.0f s)", params.split, shares.rows,
             held_out.count(), time.monotonic() - started)
    return PreparedSplit(train, held_out, segments, split.train_until, shares)


def score_algorithms(candidates: DataFrame, split: PreparedSplit, algorithms: tuple[str, ...],
                     catalog_size: int, ks: tuple[int, ...]) -> list[tuple]:
    """``(algorithm, segment, metric, value, users)`` for each algorithm's user lists in
    ``candidates`` (any algorithm name; ``BASELINE`` needs only the global popular list)."""
    started = time.monotonic()
    served = served_lists(candidates, split.held_out, algorithms)
    results = score(served, split.held_out, split.segments, split.shares, ks, catalog_size)
    log.info("%s scored (%.0f s)", ", ".join(algorithms), time.monotonic() - started)
    return results


class Evaluated(NamedTuple):
    frame: DataFrame               # EVALUATIONS rows
    policy: dict                   # evaluation/policy.json
    ranker: ranked.RankerModel | None  # the ranker trained on the training part, if evaluated


def evaluate(spark: SparkSession, rows: DataFrame, products: DataFrame, as_of: datetime, settings: dict,
             params: EvaluationParams, run_id: str, profiles: DataFrame | None = None,
             ranker_dir: Location | None = None) -> Evaluated:
    """Evaluation rows, policy and ranker for one run (``ranker_dir`` as in ``train_all``,
    used on the temporal split only)."""
    split = prepare_split(rows, as_of, params)
    candidates, ranker = train_all(split.train, products, split.train_until, settings, params.algorithms,
                                   for_users=split.held_out.select("user_id"), profiles=profiles,
                                   ranker_dir=ranker_dir if params.split == "temporal" else None)
    results = score_algorithms(candidates, split, (BASELINE, *params.algorithms),
                               products.where("active").count(), params.ks)
    evaluated_at = datetime.now(timezone.utc).replace(microsecond=0)
    frame = evaluation_rows(spark, [(run_id, as_of, evaluated_at, params.split, a, s, m, v, u, None, None)
                                    for a, s, m, v, u in results])
    policy_k = POLICY_K if POLICY_K in params.ks else max(params.ks)
    return Evaluated(frame, policy_from_results(results, run_id, as_of, policy_k), ranker)


def evaluation_rows(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """``rows`` (tuples in EVALUATIONS column order) as a frame of that table's schema."""
    return spark.createDataFrame(rows, spark_schema(EVALUATIONS))


def write_evaluations(spark: SparkSession, paths: DataPaths, frame: DataFrame, run_id: str) -> None:
    """Replace ``run_id``'s rows of the ``evaluations`` table with ``frame``."""
    table = paths.table(EVALUATIONS.name)
    ensure_table(spark, table, EVALUATIONS)
    # One run id per (split, as-of): re-running replaces its rows instead of adding
    # twice. mergeSchema: tables written before the trial/params columns gain them.
    (frame.write.format("delta").mode("overwrite").option("replaceWhere", f"run_id = '{run_id}'")
     .option("mergeSchema", "true").save(table))


def policy_from_results(results: list[tuple], run_id: str, as_of: datetime, k: int = POLICY_K) -> dict:
    """The switching priors: NDCG@k (10 when evaluated) per segment per algorithm, each
    segment's best, ``preference``: every algorithm by its score over all users, best
    first (the server's default order, so a blend that scores below one of its parts
    never leads), and ``baseline``: global popularity's score per segment."""
    metric = f"{POLICY_METRIC}@{k}"
    priors: dict[str, dict[str, float]] = {}
    baseline: dict[str, float] = {}
    for algorithm, segment, name, value, users in results:
        if name == metric and not math.isnan(value):
            if algorithm == BASELINE:
                baseline[segment] = round(value, 6)
            else:
                priors.setdefault(segment, {})[algorithm] = round(value, 6)
    best = {segment: max(scores, key=scores.get) for segment, scores in priors.items()}
    overall = priors.get("all", {})
    preference = sorted(overall, key=lambda algorithm: (-overall[algorithm], algorithm))
    return {"run_id": run_id, "as_of": as_of.isoformat(), "metric": metric, "priors": priors, "best": best,
            "preference": preference, "baseline": baseline}


def run_evaluation(spark: SparkSession, paths: DataPaths, as_of: datetime, settings: dict,
                   params: EvaluationParams) -> dict:
    """Evaluate every algorithm, replace this run's rows of ``evaluations``, write
    ``evaluation/policy.json`` and the report in ``evaluation/report/``."""
    run_id = f"{params.split}-{as_of:%Y%m%dT%H%M%SZ}"
    products = spark.read.format("delta").load(paths.table("products"))
    frame, policy, ranker = evaluate(spark, read_interactions(spark, paths), products, as_of, settings, params,
                                     run_id, profiles=read_profiles(spark, paths), ranker_dir=paths.root / RANKER_DIR)
    write_evaluations(spark, paths, frame, run_id)
    write_json_atomically(paths.policy, policy)
    report_dir = paths.root / REPORT_DIR
    with staged_locally(report_dir) as local_dir:
        written = write_report(frame.toPandas(), local_dir, trials=tuning_trials(paths.root),
                               notes=report_notes(params, settings),
                               importance=ranker.importance() if ranker is not None else None)
    report = report_dir / written.name
    log.info("evaluation %s written; best per segment: %s; report: %s", run_id, policy["best"], report)
    return policy


def tuning_trials(root) -> pd.DataFrame | None:
    """The last tuning run's trials (for the report), if there was one."""
    document = read_tuned(root)
    if not document or not document.get("trials"):
        return None
    return pd.DataFrame([{"trial": t["trial"], "algorithm": t["algorithm"], "params": json.dumps(t["params"]),
                          "score": t["score"] if t["score"] is not None else math.nan, "seconds": t["seconds"]}
                         for t in document["trials"]])


def report_notes(params: EvaluationParams, settings: dict) -> dict[str, str]:
    """The protocol and the configuration evaluated, for the report's header."""
    protocol = {"temporal": f"last {params.holdout_days:g} days held out",
                "leave_last_out": "each user's last interaction held out",
                "random": f"{params.test_fraction:.0%} of each user's products held out (seed {params.seed})"}
    notes = {"protocol": protocol[params.split]}
    if params.min_interactions > 1:
        notes["filter"] = f"{params.min_interactions}-core (users and products with that many events)"
    notes["relevant"] = ("held-out products of types " + ", ".join(params.relevant_event_types)
                         + ", minus those the user bought before")
    notes["als"] = json.dumps({k: settings["als"][k] for k in ("rank", "max_iter", "reg_param", "alpha")
                               if k in settings.get("als", {})})
    notes["hybrid weights"] = json.dumps(settings.get("hybrid", {}).get("weights", {}))
    return notes


def params_from_settings(settings: dict, **overrides) -> EvaluationParams:
    values = {**settings, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("ks", "algorithms", "relevant_event_types"):
        if key in values:
            values[key] = tuple(values[key])
    return EvaluationParams(**values)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=SPLITS, help="evaluation protocol (default from conf)")
    parser.add_argument("--holdout-days", type=float, help="temporal split: days held out before --as-of")
    parser.add_argument("--k", type=int, nargs="+", dest="ks", help="cut-offs, e.g. --k 5 10 20")
    parser.add_argument("--test-fraction", type=float, help="random split: share of each user's products held out")
    parser.add_argument("--min-interactions", type=int, help="k-core filter before splitting (0: off)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = data_paths(settings, args.data_dir)
    settings = with_tuned(settings, paths.root)  # evaluate what the next nightly will run
    params = params_from_settings(settings["evaluation"], split=args.split, holdout_days=args.holdout_days,
                                  ks=args.ks, min_interactions=args.min_interactions,
                                  test_fraction=args.test_fraction)
    spark = get_spark("recsys-evaluation")
    policy = run_evaluation(spark, paths, resolve_as_of(args.as_of), settings, params)
    print(json.dumps(policy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
