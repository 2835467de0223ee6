"""Tuning: search ALS hyper-parameters and the hybrid's weights on a validation split.

The evaluation's protocol (``[evaluation]``: split, holdout, k-core) first cuts the
interactions into a training and a test part. Tuning never reads the test part: it
applies the same protocol again to the training part alone, so the validation
part is the last ``holdout_days`` *before* the test period (temporal), or a random
share of the training products (random, leave-last-out likewise). Every trial
trains on what is left and is scored on the validation part by ``metric``
(NDCG@10 by default), all users pooled.

Trials:

- ALS, trial 0 the configuration in ``conf/jobs.toml [als]``, then configurations
  drawn (seeded, without repeats) from the grid in ``[tuning]``: rank, iterations,
  regularisation, alpha and the event-weight sets;
- hybrid, with the best ALS lists and popularity and content trained once: trial 0
  the conf weights, then weight combinations from ``hybrid_weight_grid``
  (reciprocal-rank fusion is blind to the weights' scale, so combinations that
  are multiples of another are tried once).

Both stop at ``max_trials`` or when the next trial would overrun the time budget
(``budget_minutes``, shared: ALS gets ``als_budget_share`` of it). Every trial is a
row per metric in the ``evaluations`` table (``run_id`` ``tuning-<split>-<as_of>``,
``trial``, ``params`` as JSON). The winners go to ``<data-dir>/evaluation/tuned.json``,
which the next ALS, hybrid and evaluation runs lay over conf (``jobs.tuned``).
Trial 0 is the configuration in conf, so the winner never scores below it on the
validation part.

Run: ``python -m jobs.tuning --help`` or ``spark-submit jobs/tuning.py --help``.
"""
from __future__ import annotations

import itertools
import json
import logging
import random
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.settings import load_conf

from jobs import als, content, hybrid, popularity
from jobs.cli import configure_logging, job_parser, resolve_as_of
from jobs.evaluation import EvaluationParams, PreparedSplit, evaluation_rows, prepare_split, split_rows, write_evaluations
from jobs.evaluation import params_from_settings as evaluation_params
from jobs.interactions import read_interactions
from jobs.paths import DataPaths
from jobs.scoring import ALL_USERS, score, served_lists
from jobs.spark_session import get_spark
from jobs.tuned import TUNED_FILE, write_json_atomically

log = logging.getLogger(__name__)

# Metrics recorded per trial (segment "all"); ``metric`` picks the winner among them.
TRIAL_METRICS = ("ndcg", "recall", "hit_rate", "map")


@dataclass(frozen=True)
class TuningParams:
    budget_minutes: float = 20.0
    als_budget_share: float = 0.8   # the rest is left for the (cheaper) hybrid trials
    max_trials: int = 12            # per algorithm, trial 0 included
    metric: str = "ndcg"
    k: int = 10
    seed: int = 7
    rank: tuple[int, ...] = (16, 32, 64)
    max_iter: tuple[int, ...] = (5, 10, 15)
    reg_param: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
    alpha: tuple[float, ...] = (1.0, 5.0, 10.0, 40.0)
    # name -> event weights; "conf" (the [als] weights) is always a candidate too.
    event_weight_sets: dict[str, dict[str, float]] = field(default_factory=dict)
    hybrid_weight_grid: tuple[float, ...] = (0.0, 0.3, 0.5, 1.0)

    def __post_init__(self):
        if not self.budget_minutes > 0 or not 0 < self.als_budget_share <= 1:
            raise ValueError("budget_minutes must be positive and als_budget_share in (0, 1]")
        if self.max_trials < 1 or self.k < 1:
            raise ValueError("max_trials and k must be at least 1")
        if self.metric not in TRIAL_METRICS:
            raise ValueError(f"metric must be one of {TRIAL_METRICS}")
        grids = (self.rank, self.max_iter, self.reg_param, self.alpha, self.hybrid_weight_grid)
        if not all(grids):
            raise ValueError("every search grid needs at least one value")
        if not any(w > 0 for w in self.hybrid_weight_grid):
            raise ValueError("hybrid_weight_grid needs a positive weight")


@dataclass
class Trial:
    algorithm: str
    number: int
    params: dict
    metrics: dict[str, float]  # "ndcg@10" -> value, segment all
    users: int
    seconds: float


# --- the search space ----------------------------------------------------------

def als_trial_params(base: als.AlsParams, params: TuningParams) -> list[als.AlsParams]:
    """``base`` (trial 0), then up to ``max_trials - 1`` distinct grid points in a seeded order."""
    weight_sets = {"conf": dict(base.event_weights), **params.event_weight_sets}
    grid = [dict(rank=r, max_iter=i, reg_param=g, alpha=a, event_weights=weight_sets[w])
            for r, i, g, a, w in itertools.product(params.rank, params.max_iter, params.reg_param,
                                                   params.alpha, sorted(weight_sets))]
    random.Random(params.seed).shuffle(grid)
    trials, seen = [base], {_als_key(base)}
    for point in grid:
        if len(trials) >= params.max_trials:
            break
        candidate = replace(base, **point)
        if _als_key(candidate) not in seen:
            seen.add(_als_key(candidate))
            trials.append(candidate)
    return trials


def _als_key(p: als.AlsParams) -> str:
    return json.dumps(tuned_als_settings(p), sort_keys=True)


def tuned_als_settings(p: als.AlsParams) -> dict:
    """The ``[als]`` keys tuning chooses (the others stay as in conf)."""
    return {"rank": p.rank, "max_iter": p.max_iter, "reg_param": p.reg_param, "alpha": p.alpha,
            "event_weights": dict(p.event_weights)}


def hybrid_trial_weights(base: hybrid.HybridParams, params: TuningParams) -> list[dict[str, float]]:
    """``base.weights`` (trial 0), then distinct weight ratios over the same algorithms."""
    names = sorted(base.weights)
    grid = [dict(zip(names, ws)) for ws in itertools.product(params.hybrid_weight_grid, repeat=len(names))]
    grid = [w for w in grid if any(v > 0 for v in w.values())]
    random.Random(params.seed).shuffle(grid)
    trials, seen = [dict(base.weights)], {_ratio_key(base.weights)}
    for weights in grid:
        if len(trials) >= params.max_trials:
            break
        if _ratio_key(weights) not in seen:
            seen.add(_ratio_key(weights))
            trials.append(weights)
    return trials


def _ratio_key(weights: dict[str, float]) -> tuple:
    top = max(weights.values())
    return tuple(sorted((name, round(w / top, 6)) for name, w in weights.items()))


# --- scoring ---------------------------------------------------------------------

@dataclass
class Validation:
    """Everything a trial needs that does not depend on the trial."""
    split: PreparedSplit  # carved from the evaluation's training part
    popular: DataFrame    # popularity candidates on it (its global list is the fallback)
    ks: tuple[int, ...]


def validation_split(rows: DataFrame, as_of: datetime, evaluation: EvaluationParams) -> PreparedSplit:
    """The evaluation's protocol applied twice: to all rows, then to the first split's
    training part alone. The test part of the first split is never read."""
    outer = split_rows(rows, as_of, evaluation)
    return prepare_split(outer.train, outer.train_until, evaluation)


def score_lists(candidates: DataFrame, algorithm: str, validation: Validation) -> tuple[dict[str, float], int]:
    """Metrics of ``algorithm``'s user lists in ``candidates`` on the validation part (all users)."""
    split = validation.split
    served = served_lists(candidates.unionByName(validation.popular), split.held_out, (algorithm,))
    results = score(served, split.held_out, split.segments, split.shares, validation.ks)
    rows = [r for r in results if r[1] == ALL_USERS and r[2].split("@")[0] in TRIAL_METRICS]
    return {metric: value for _, _, metric, value, _ in rows}, max((users for *_, users in rows), default=0)


def run_trials(algorithm: str, configs: list, fit: Callable, describe: Callable[[object], dict],
               validation: Validation, params: TuningParams, deadline: float) -> list[Trial]:
    """Fit and score each config in turn until the configs or the time run out.
    A trial starts only if the mean trial time so far still fits before ``deadline``
    (trial 0 always runs: it is the baseline the winner is measured against)."""
    trials: list[Trial] = []
    for number, config in enumerate(configs):
        spent = [t.seconds for t in trials]
        if trials and time.monotonic() + sum(spent) / len(spent) > deadline:
            log.info("%s tuning: time budget reached after %d trials", algorithm, len(trials))
            break
        started = time.monotonic()
        candidates = fit(config)
        metrics, users = score_lists(candidates, algorithm, validation)
        trial = Trial(algorithm, number, describe(config), metrics, users, round(time.monotonic() - started, 1))
        trials.append(trial)
        log.info("%s trial %d: %s@%d = %.5f (%.0f s) %s", algorithm, number, params.metric, params.k,
                 metrics.get(f"{params.metric}@{params.k}", float("nan")), trial.seconds, trial.params)
    return trials


def best_trial(trials: list[Trial], params: TuningParams) -> Trial:
    """Highest score; ties go to the earlier trial (trial 0, conf, wins a tie)."""
    key = f"{params.metric}@{params.k}"
    return max(trials, key=lambda t: (t.metrics.get(key, float("-inf")), -t.number))


# --- the whole search -------------------------------------------------------------

def tune(rows: DataFrame, products: DataFrame, as_of: datetime, settings: dict,
         evaluation: EvaluationParams, params: TuningParams) -> dict[str, list[Trial]]:
    """ALS and hybrid trials on a validation split carved from the evaluation's training part."""
    started = time.monotonic()
    deadline = started + params.budget_minutes * 60
    split = validation_split(rows, as_of, evaluation)
    train, until = split.train, split.train_until
    scored = split.held_out.select("user_id")  # lists for the scored users only: the same lists, less work
    popular = popularity.popularity_candidates(train, products, until,
                                               popularity.params_from_settings(settings["popularity"]),
                                               for_users=scored)
    validation = Validation(split, popular.localCheckpoint(), (params.k,))

    def fit_als(p: als.AlsParams) -> DataFrame:
        candidates, _ = als.als_candidates(train, until, p, product_lists=False, for_users=scored)
        return candidates.localCheckpoint()

    als_trials = run_trials("als", als_trial_params(als.params_from_settings(settings["als"]), params),
                            fit_als, tuned_als_settings, validation, params,
                            started + params.budget_minutes * 60 * params.als_budget_share)
    best_als = als.params_from_settings({**settings["als"], **best_trial(als_trials, params).params})

    base_hybrid = hybrid.params_from_settings(settings["hybrid"])
    sources = [validation.popular, fit_als(best_als)]
    if "content" in base_hybrid.weights:
        # User lists only, as the fusion reads: building them collects the neighbour lists
        # once, and the product lists would compute them again (the filter prunes that branch).
        sources.append(content.content_candidates(train, products, until,
                                                  content.params_from_settings(settings["content"]),
                                                  for_users=scored)
                       .where(F.col("subject_kind") == "user"))
    lists = sources[0]
    for part in sources[1:]:
        lists = lists.unionByName(part)
    lists = lists.localCheckpoint()

    def fit_hybrid(weights: dict[str, float]) -> DataFrame:
        return hybrid.fused_user_lists(lists, replace(base_hybrid, weights=weights), until)

    hybrid_trials = run_trials("hybrid", hybrid_trial_weights(base_hybrid, params), fit_hybrid,
                               lambda w: {"weights": w}, validation, params, deadline)
    log.info("tuning done in %.0f s", time.monotonic() - started)
    return {"als": als_trials, "hybrid": hybrid_trials}


def trial_rows(trials: dict[str, list[Trial]], run_id: str, as_of: datetime, split: str) -> list[tuple]:
    """EVALUATIONS rows: one per trial and metric, segment ``all``."""
    evaluated_at = datetime.now(timezone.utc).replace(microsecond=0)
    return [(run_id, as_of, evaluated_at, split, t.algorithm, "all", metric, value, t.users, t.number,
             json.dumps(t.params, sort_keys=True))
            for group in trials.values() for t in group for metric, value in sorted(t.metrics.items())]


def tuned_document(trials: dict[str, list[Trial]], run_id: str, as_of: datetime, params: TuningParams) -> dict:
    """``tuned.json``: the winners (laid over conf by the next runs) and every trial."""
    key = f"{params.metric}@{params.k}"
    winners = {name: best_trial(group, params) for name, group in trials.items()}
    return {
        "run_id": run_id, "as_of": as_of.isoformat(), "metric": key,
        "settings": {name: t.params for name, t in winners.items()},
        "scores": {name: {"conf": group[0].metrics.get(key), "best": winners[name].metrics.get(key),
                          "best_trial": winners[name].number, "trials": len(group)}
                   for name, group in trials.items()},
        "trials": [{"algorithm": t.algorithm, "trial": t.number, "params": t.params, "score": t.metrics.get(key),
                    "seconds": t.seconds} for group in trials.values() for t in group],
    }


def run_tuning(spark: SparkSession, paths: DataPaths, as_of: datetime, settings: dict,
               evaluation: EvaluationParams, params: TuningParams) -> dict:
    """Tune, record every trial in ``evaluations`` and write ``evaluation/tuned.json``."""
    run_id = f"tuning-{evaluation.split}-{as_of:%Y%m%dT%H%M%SZ}"
    products = spark.read.format("delta").load(paths.table("products"))
    trials = tune(read_interactions(spark, paths), products, as_of, settings, evaluation, params)
    write_evaluations(spark, paths, evaluation_rows(spark, trial_rows(trials, run_id, as_of, evaluation.split)),
                      run_id)
    document = tuned_document(trials, run_id, as_of, params)
    write_json_atomically(paths.root / TUNED_FILE, document)
    log.info("tuning %s: %s", run_id, json.dumps(document["scores"]))
    return document


def params_from_settings(settings: dict, **overrides) -> TuningParams:
    values = {**settings, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("rank", "max_iter", "reg_param", "alpha", "hybrid_weight_grid"):
        if key in values:
            values[key] = tuple(values[key])
    values.pop("use_tuned", None)  # read by jobs.tuned, not a search setting
    return TuningParams(**values)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, help="stop starting trials after this (default from conf)")
    parser.add_argument("--max-trials", type=int, help="trials per algorithm, conf's configuration included")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")  # plain conf: trial 0 is what conf says, not the last winner
    paths = DataPaths.from_settings(settings, args.data_dir)
    params = params_from_settings(settings["tuning"], budget_minutes=args.budget_minutes,
                                  max_trials=args.max_trials)
    spark = get_spark("recsys-tuning")
    document = run_tuning(spark, paths, resolve_as_of(args.as_of), settings,
                          evaluation_params(settings["evaluation"]), params)
    print(json.dumps({key: document[key] for key in ("run_id", "settings", "scores")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
