"""Tuning: search ALS, EASE, the learned ranker and the hybrid's weights on a validation split.

The evaluation's protocol (``[evaluation]``: split, holdout, k-core) first cuts the
interactions into a training and a test part. Tuning never reads the test part: it
applies the same protocol again to the training part alone, so the validation
part is the last ``holdout_days`` *before* the test period (temporal), or a random
share of the training products (random, leave-last-out likewise). Every trial
trains on what is left and is scored on the validation part by ``metric``
(NDCG@10 by default), all users pooled.

Each algorithm has an Optuna study (TPE sampler, seeded), trial 0 of every run
being conf's own configuration:

- ALS: rank, iterations, regularisation and alpha drawn log-uniform from the
  ranges in ``[tuning]``, and an event-weight set (conf's or a named one);
- EASE: l2 (log-uniform) and the value of X's entries;
- the ranker (``jobs.ranked``, over the best ALS and EASE): leaves, learning rate
  and minimum leaf size (log-uniform), feature fraction (uniform). Its training
  rows and the validation users' features are built once; a trial fits and scores;
- hybrid, fusing the best ALS and EASE lists with popularity and content (trained
  once): each weight uniform in ``hybrid_weight``, EASE included even when conf
  gives it none.

No pruner: a trial is one fit with no intermediate score to stop it on. Each search
stops at ``max_trials`` or when the next trial would overrun its share of the time
budget (``budget_minutes``; ``als_budget_share``, ``ease_budget_share``,
``ranked_budget_share`` (0: the ranker is not searched), the hybrid the rest). The
studies live in ``<data-dir>/evaluation/tuning.db`` (SQLite), so the next run's sampler
starts from every earlier trial; the winner is chosen among this run's trials only,
since earlier ones were scored on other data. Every trial is a
row per metric in the ``evaluations`` table (``run_id`` ``tuning-<split>-<as_of>``,
``trial``, ``params`` as JSON). The winners go to ``<data-dir>/evaluation/tuned.json``,
which the next ALS, EASE, ranked, hybrid and evaluation runs lay over conf (``jobs.tuned``).
Trial 0 is the configuration in conf, so the winner never scores below it on the
validation part.

Run: ``python -m jobs.tuning --help`` or ``spark-submit jobs/tuning.py --help``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import optuna
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.settings import load_conf
from schemas.storage import staged_file

from jobs import als, content, ease, hybrid, popularity, ranked
from jobs.candidates import params_digest
from jobs.cli import configure_logging, data_paths, job_parser, resolve_as_of
from jobs.evaluation import EvaluationParams, PreparedSplit, evaluation_rows, prepare_split, split_rows, write_evaluations
from jobs.evaluation import params_from_settings as evaluation_params
from jobs.interactions import read_interactions, read_profiles
from jobs.paths import DataPaths
from jobs.scoring import ALL_USERS, score, served_lists
from jobs.spark_session import get_spark
from jobs.tuned import TUNED_FILE, write_json_atomically

log = logging.getLogger(__name__)

# Optuna's studies, one per algorithm, split and metric: a later run continues them.
STUDY_FILE = Path("evaluation") / "tuning.db"
# TuningParams fields that bound the search, not shape it.
NOT_SEARCH_SPACE = ("budget_minutes", "als_budget_share", "ease_budget_share", "ranked_budget_share", "max_trials")
# TuningParams fields that are [low, high] search ranges.
RANGES = ("rank", "max_iter", "reg_param", "alpha", "ease_l2", "hybrid_weight", "ranked_num_leaves",
          "ranked_learning_rate", "ranked_min_data_in_leaf", "ranked_feature_fraction")
# Metrics recorded per trial (segment "all"); ``metric`` picks the winner among them.
TRIAL_METRICS = ("ndcg", "recall", "hit_rate", "map")


@dataclass(frozen=True)
class TuningParams:
    budget_minutes: float = 20.0
    # Shares of the budget: ALS, EASE, the ranker, then the (cheap) hybrid trials take the rest.
    als_budget_share: float = 0.5
    ease_budget_share: float = 0.15
    ranked_budget_share: float = 0.2
    max_trials: int = 12            # per algorithm, trial 0 included
    metric: str = "ndcg"
    k: int = 10
    seed: int = 7
    # Search ranges [low, high]; numbers are drawn log-uniform, hybrid weights uniform.
    rank: tuple[int, int] = (8, 128)
    max_iter: tuple[int, int] = (5, 20)
    reg_param: tuple[float, float] = (1e-3, 10.0)
    alpha: tuple[float, float] = (0.5, 100.0)
    ease_l2: tuple[float, float] = (0.5, 10_000.0)
    hybrid_weight: tuple[float, float] = (0.0, 1.0)
    ranked_num_leaves: tuple[int, int] = (7, 127)
    ranked_learning_rate: tuple[float, float] = (0.01, 0.2)
    ranked_min_data_in_leaf: tuple[int, int] = (5, 200)
    ranked_feature_fraction: tuple[float, float] = (0.5, 1.0)
    # name -> event weights; "conf" (the [als] weights) is always a candidate too.
    event_weight_sets: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self):
        shares = (self.als_budget_share, self.ease_budget_share, self.ranked_budget_share)
        if not self.budget_minutes > 0 or not (0 < shares[0] and min(shares) >= 0 and sum(shares) <= 1):
            raise ValueError("budget_minutes must be positive and the budget shares between 0 and 1 in sum")
        if self.max_trials < 1 or self.k < 1:
            raise ValueError("max_trials and k must be at least 1")
        if self.metric not in TRIAL_METRICS:
            raise ValueError(f"metric must be one of {TRIAL_METRICS}")
        for name in RANGES:
            low, high = getattr(self, name)
            if not 0 <= low <= high or (name != "hybrid_weight" and low == 0):
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high")
        if self.ranked_feature_fraction[1] > 1:
            raise ValueError("ranked_feature_fraction must lie in (0, 1]")
        if self.hybrid_weight[1] <= 0:
            raise ValueError("hybrid_weight needs a positive upper bound")


@dataclass
class Trial:
    algorithm: str
    number: int
    params: dict
    metrics: dict[str, float]  # "ndcg@10" -> value, segment all
    users: int
    seconds: float


# --- the search space ----------------------------------------------------------
# Each suggest_* draws one configuration from an Optuna trial; trial 0 of every run is
# conf's own configuration, enqueued as fixed values of the same parameters.

def suggest_als(trial: optuna.Trial, base: als.AlsParams, params: TuningParams) -> als.AlsParams:
    weight_sets = {"conf": dict(base.event_weights), **params.event_weight_sets}
    return replace(base, rank=trial.suggest_int("rank", *params.rank, log=True),
                   max_iter=trial.suggest_int("max_iter", *params.max_iter),
                   reg_param=trial.suggest_float("reg_param", *params.reg_param, log=True),
                   alpha=trial.suggest_float("alpha", *params.alpha, log=True),
                   event_weights=weight_sets[trial.suggest_categorical("event_weights", sorted(weight_sets))])


def als_fixed(base: als.AlsParams) -> dict:
    """suggest_als's parameters for ``base`` itself."""
    return {"rank": base.rank, "max_iter": base.max_iter, "reg_param": base.reg_param, "alpha": base.alpha,
            "event_weights": "conf"}


def tuned_als_settings(p: als.AlsParams) -> dict:
    """The ``[als]`` keys tuning chooses (the others stay as in conf)."""
    return {"rank": p.rank, "max_iter": p.max_iter, "reg_param": p.reg_param, "alpha": p.alpha,
            "event_weights": dict(p.event_weights)}


def suggest_ease(trial: optuna.Trial, base: ease.EaseParams, params: TuningParams) -> ease.EaseParams:
    return replace(base, l2=trial.suggest_float("l2", *params.ease_l2, log=True),
                   value=trial.suggest_categorical("value", list(ease.VALUES)))


def tuned_ease_settings(p: ease.EaseParams) -> dict:
    return {"l2": p.l2, "value": p.value}


def suggest_ranked(trial: optuna.Trial, base: ranked.RankedParams, params: TuningParams) -> ranked.RankedParams:
    return replace(base, num_leaves=trial.suggest_int("num_leaves", *params.ranked_num_leaves, log=True),
                   learning_rate=trial.suggest_float("learning_rate", *params.ranked_learning_rate, log=True),
                   min_data_in_leaf=trial.suggest_int("min_data_in_leaf", *params.ranked_min_data_in_leaf, log=True),
                   feature_fraction=trial.suggest_float("feature_fraction", *params.ranked_feature_fraction))


def tuned_ranked_settings(p: ranked.RankedParams) -> dict:
    """suggest_ranked's parameters of ``p``."""
    return {"num_leaves": p.num_leaves, "learning_rate": p.learning_rate, "min_data_in_leaf": p.min_data_in_leaf,
            "feature_fraction": p.feature_fraction}


def hybrid_names(base: hybrid.HybridParams) -> list[str]:
    """The algorithms the hybrid's weights are searched over: conf's, and EASE."""
    return sorted({*base.weights, "ease"})


def suggest_hybrid(trial: optuna.Trial, base: hybrid.HybridParams, params: TuningParams) -> dict[str, float]:
    weights = {name: trial.suggest_float(f"weight_{name}", *params.hybrid_weight) for name in hybrid_names(base)}
    if not any(w > 0 for w in weights.values()):
        raise optuna.TrialPruned("every weight is 0")
    return weights


def hybrid_fixed(base: hybrid.HybridParams, params: TuningParams) -> dict:
    """suggest_hybrid's parameters for conf's weights (clipped to the range)."""
    low, high = params.hybrid_weight
    return {f"weight_{name}": min(max(base.weights.get(name, 0.0), low), high) for name in hybrid_names(base)}


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


def prepare_validation(rows: DataFrame, products: DataFrame, as_of: datetime, settings: dict,
                       evaluation: EvaluationParams, params: TuningParams) -> Validation:
    """The validation split and the popular lists every trial falls back on."""
    split = validation_split(rows, as_of, evaluation)
    scored = split.held_out.select("user_id")  # lists for the scored users only: the same lists, less work
    popular = popularity.popularity_candidates(split.train, products, split.train_until,
                                               popularity.params_from_settings(settings["popularity"]),
                                               for_users=scored)
    return Validation(split, popular.localCheckpoint(), (params.k,))


def score_lists(candidates: DataFrame, algorithm: str, validation: Validation) -> tuple[dict[str, float], int]:
    """Metrics of ``algorithm``'s user lists in ``candidates`` on the validation part (all users)."""
    split = validation.split
    served = served_lists(candidates.unionByName(validation.popular), split.held_out, (algorithm,))
    results = score(served, split.held_out, split.segments, split.shares, validation.ks)
    rows = [r for r in results if r[1] == ALL_USERS and r[2].split("@")[0] in TRIAL_METRICS]
    return {metric: value for _, _, metric, value, _ in rows}, max((users for *_, users in rows), default=0)


def open_study(algorithm: str, params: TuningParams, storage: str | None, split: str) -> optuna.Study:
    """``algorithm``'s study: TPE, seeded; kept in ``storage`` (an SQLAlchemy URL, e.g.
    SQLite under the data dir) so the next run's sampler starts from every earlier trial,
    or in memory without one."""
    sampler = optuna.samplers.TPESampler(seed=params.seed, n_startup_trials=max(2, params.max_trials // 3))
    # A changed search space starts a new study: Optuna cannot widen a stored one's choices.
    space = params_digest({k: v for k, v in asdict(params).items() if k not in NOT_SEARCH_SPACE})
    return optuna.create_study(study_name=f"recsys-{algorithm}-{split}-{params.metric}@{params.k}-{space}",
                               storage=storage, sampler=sampler, direction="maximize", load_if_exists=True)


def run_trials(study: optuna.Study, algorithm: str, fixed: dict, fit: Callable[[optuna.Trial], tuple],
               validation: Validation, params: TuningParams, deadline: float) -> list[Trial]:
    """Trial 0 (``fixed``: conf's configuration), then Optuna's suggestions, until
    ``max_trials`` or the time runs out: a trial starts only if the mean trial time so
    far still fits before ``deadline``. ``fit(trial)`` returns ``(candidates, params
    to record)``. Returns this run's trials only (the study keeps earlier runs' too)."""
    key = f"{params.metric}@{params.k}"
    trials: list[Trial] = []

    def objective(trial: optuna.Trial) -> float:
        started = time.monotonic()
        candidates, described = fit(trial)
        metrics, users = score_lists(candidates, algorithm, validation)
        trials.append(Trial(algorithm, len(trials), described, metrics, users, round(time.monotonic() - started, 1)))
        log.info("%s trial %d: %s = %.5f (%.0f s) %s", algorithm, trials[-1].number, key,
                 metrics.get(key, float("nan")), trials[-1].seconds, described)
        return metrics.get(key, 0.0)

    def stop_before_overrun(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        spent = [t.seconds for t in trials]
        if spent and time.monotonic() + sum(spent) / len(spent) > deadline:
            log.info("%s tuning: time budget reached after %d trials", algorithm, len(trials))
            study.stop()

    study.enqueue_trial(fixed, skip_if_exists=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial is logged above, once
    study.optimize(objective, n_trials=params.max_trials, callbacks=[stop_before_overrun])
    return trials


def best_trial(trials: list[Trial], params: TuningParams) -> Trial:
    """Highest score; ties go to the earlier trial (trial 0, conf, wins a tie)."""
    key = f"{params.metric}@{params.k}"
    return max(trials, key=lambda t: (t.metrics.get(key, float("-inf")), -t.number))


# --- the whole search -------------------------------------------------------------

def tune(rows: DataFrame, products: DataFrame, as_of: datetime, settings: dict,
         evaluation: EvaluationParams, params: TuningParams, storage: str | None = None,
         profiles: DataFrame | None = None) -> dict[str, list[Trial]]:
    """ALS, EASE, ranker and hybrid trials on a validation split carved from the
    evaluation's training part; the studies in ``storage`` (None: in memory)."""
    started = time.monotonic()
    budget = params.budget_minutes * 60
    validation = prepare_validation(rows, products, as_of, settings, evaluation, params)
    train, until = validation.split.train, validation.split.train_until
    scored = validation.split.held_out.select("user_id")

    def als_lists(p: als.AlsParams) -> DataFrame:
        candidates, _ = als.als_candidates(train, until, p, product_lists=False, for_users=scored)
        return candidates.localCheckpoint()

    def ease_lists(p: ease.EaseParams) -> DataFrame:
        return ease.ease_candidates(train, until, p, product_lists=False, for_users=scored).localCheckpoint()

    def study(algorithm: str) -> optuna.Study:
        return open_study(algorithm, params, storage, evaluation.split)

    base_als = als.params_from_settings(settings["als"])

    def fit_als(trial: optuna.Trial) -> tuple:
        p = suggest_als(trial, base_als, params)
        return als_lists(p), tuned_als_settings(p)

    als_trials = run_trials(study("als"), "als", als_fixed(base_als), fit_als, validation, params,
                            started + budget * params.als_budget_share)
    best_als = als.params_from_settings({**settings["als"], **best_trial(als_trials, params).params})

    base_ease = ease.params_from_settings(settings["ease"])

    def fit_ease(trial: optuna.Trial) -> tuple:
        p = suggest_ease(trial, base_ease, params)
        return ease_lists(p), tuned_ease_settings(p)

    ease_trials = run_trials(study("ease"), "ease", tuned_ease_settings(base_ease), fit_ease, validation, params,
                             started + budget * (params.als_budget_share + params.ease_budget_share))
    best_ease = ease.params_from_settings({**settings["ease"], **best_trial(ease_trials, params).params})

    base_hybrid = hybrid.params_from_settings(settings["hybrid"])
    # The ranker's generators follow the winners: its features are their scores and ranks.
    tuned_settings = {**settings, "als": {**settings["als"], **best_trial(als_trials, params).params},
                      "ease": {**settings["ease"], **best_trial(ease_trials, params).params}}
    base_ranked = ranked.params_from_settings(tuned_settings)
    search_ranked = params.ranked_budget_share > 0
    sources = [validation.popular, als_lists(best_als), ease_lists(best_ease)]
    if "content" in base_hybrid.weights or (search_ranked and "content" in base_ranked.generators):
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
    trials = {"als": als_trials, "ease": ease_trials}

    if search_ranked:
        frame, vocabularies = ranked.training_rows(train, products, profiles, until, base_ranked)
        features = ranked.scoring_features(lists, train, products, profiles, until, vocabularies,
                                           base_ranked.spec).localCheckpoint()

        def fit_ranked(trial: optuna.Trial) -> tuple:
            p = suggest_ranked(trial, base_ranked, params)
            model = ranked.model_from_rows(frame, vocabularies, until, p)
            return ranked.scored_lists(features, model, p.top_n), tuned_ranked_settings(p)

        trials["ranked"] = run_trials(study("ranked"), "ranked", tuned_ranked_settings(base_ranked), fit_ranked,
                                      validation, params, started + budget * (
                                          params.als_budget_share + params.ease_budget_share
                                          + params.ranked_budget_share))

    def fit_hybrid(trial: optuna.Trial) -> tuple:
        weights = suggest_hybrid(trial, base_hybrid, params)
        listed = {name: w for name, w in weights.items() if w > 0}  # the hybrid job reads only these
        return hybrid.fused_user_lists(lists, replace(base_hybrid, weights=weights), until), {"weights": listed}

    trials["hybrid"] = run_trials(study("hybrid"), "hybrid", hybrid_fixed(base_hybrid, params), fit_hybrid,
                                  validation, params, started + budget)
    log.info("tuning done in %.0f s", time.monotonic() - started)
    return trials


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
    with staged_file(paths.root / STUDY_FILE) as study_file:  # SQLite needs a local file
        trials = tune(read_interactions(spark, paths), products, as_of, settings, evaluation, params,
                      storage=f"sqlite:///{study_file}", profiles=read_profiles(spark, paths))
    write_evaluations(spark, paths, evaluation_rows(spark, trial_rows(trials, run_id, as_of, evaluation.split)),
                      run_id)
    document = tuned_document(trials, run_id, as_of, params)
    write_json_atomically(paths.root / TUNED_FILE, document)
    log.info("tuning %s: %s", run_id, json.dumps(document["scores"]))
    return document


def params_from_settings(settings: dict, **overrides) -> TuningParams:
    values = {**settings, **{k: v for k, v in overrides.items() if v is not None}}
    for key in RANGES:
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
    paths = data_paths(settings, args.data_dir)
    params = params_from_settings(settings["tuning"], budget_minutes=args.budget_minutes,
                                  max_trials=args.max_trials)
    spark = get_spark("recsys-tuning")
    document = run_tuning(spark, paths, resolve_as_of(args.as_of), settings,
                          evaluation_params(settings["evaluation"]), params)
    print(json.dumps({key: document[key] for key in ("run_id", "settings", "scores")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
