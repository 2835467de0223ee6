"""The protocols -- which data set, split how, with which settings -- and one
protocol's run: tune ours and implicit's ALS with the same budget on a validation
split of the training part, split once, train every algorithm and both ALS
implementations on the same training part, score them all with the same code."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from schemas.settings import deep_merge

from jobs import als, ranked, tuning
from jobs.evaluation import (
    BASELINE, EvaluationParams, PreparedSplit, params_from_settings, prepare_split, score_algorithms, train_all,
)

from bench.quality import implicit_als
from bench.quality.datasets import Dataset, iso
from bench.quality.timing import timed

log = logging.getLogger("bench.quality")

TABLE_K = 10  # the cut-off every table reports; always evaluated
# Half-life (days) long enough that nothing decays: MovieLens ratings are not a live
# log, so decay would only measure how long before the last rating GroupLens
# collected them (ML-1M spans three years: most ratings would weigh ~0).
NO_DECAY_DAYS = 1e9
QUICK_MAX_ITER = 3  # --quick: ALS iterations (both implementations)
# Tuning budget (minutes, trials per algorithm). Small on purpose: enough to move off
# conf where conf is poor for the data, not a full search.
TUNING_BUDGET, QUICK_TUNING_BUDGET = (5.0, 6), (1.0, 2)
# The generators the learned ranker is compared with (the hybrid is a blend, not one).
SINGLE_GENERATORS = ("popular", "als", "ease", "content")
# Random protocols hold out a random share: the ranker learns that task (jobs.ranked).
RANDOM_LABELS = {"ranked": {"label_split": "random"}}


@dataclass(frozen=True)
class Protocol:
    name: str
    dataset: str                 # a key of the loaded datasets: "taobao", "online-retail", "movielens"
    description: str
    evaluation: dict             # laid over conf [evaluation]
    settings: dict = field(default_factory=dict)  # laid over conf (sections deep-merged)
    tune: bool = True            # search ours and implicit's settings on a validation split first


PROTOCOLS = {p.name: p for p in (
    Protocol("taobao-temporal", "taobao",
             "Taobao sample: the last day before the clock (2017-12-04T00:00Z) held out; "
             "algorithms train on everything before, clock at the split",
             {"split": "temporal", "holdout_days": 1.0}),
    Protocol("taobao-random-5core", "taobao",
             "Taobao sample, 5-core (users and products with at least 5 events): "
             "25% of each user's products held out at random (seeded)",
             {"split": "random", "min_interactions": 5, "test_fraction": 0.25}, settings=RANDOM_LABELS),
    Protocol("online-retail-temporal", "online-retail",
             "UCI Online Retail purchases: the last 30 days before the clock (2011-12-10T00:00Z) held out; "
             "algorithms train on everything before, clock at the split; the ranker's labels are the last "
             "7 days (purchases are sparse: one day labels few customers)",
             {"split": "temporal", "holdout_days": 30.0}, settings={"ranked": {"label_days": 7.0}}),
    Protocol("online-retail-random", "online-retail",
             "UCI Online Retail purchases, 5-core (customers and products with at least 5 purchases): "
             "25% of each customer's products held out at random (seeded)",
             {"split": "random", "min_interactions": 5, "test_fraction": 0.25}, settings=RANDOM_LABELS),
    Protocol("movielens-random", "movielens",
             "MovieLens ratings as implicit interactions: 25% of each user's movies held out at random "
             "(seeded); ALS and hybrid settings tuned on a validation split of the training part; no decay",
             {"split": "random", "test_fraction": 0.25},
             settings={**{section: {"half_life_days": NO_DECAY_DAYS} for section in ("popularity", "als", "content")},
                       "ranked": {"half_life_days": NO_DECAY_DAYS, **RANDOM_LABELS["ranked"]}}),
)}


@dataclass(frozen=True)
class RunOptions:
    threads: int              # implicit's threads (Spark runs local[*])
    quick: bool               # fewer ALS iterations, a smaller tuning budget
    tuning_minutes: float     # movielens-random's tuning budget ...
    tuning_trials: int        # ... and trials per algorithm, conf's configuration included


@dataclass
class ProtocolRun:
    """Everything the report shows about one protocol."""
    protocol: Protocol
    dataset: dict
    params: EvaluationParams
    settings: dict            # the als and hybrid settings the algorithms ran with
    split: dict
    results: list[tuple]      # score_algorithms rows: (algorithm, segment, metric, value, users)
    seconds: dict[str, float]
    implicit: dict
    tuning: dict | None = None


def protocol_settings(settings: dict, protocol: Protocol, options: RunOptions) -> dict:
    """conf with the protocol's overrides (and ``--quick``'s) laid over it."""
    settings = deep_merge(settings, protocol.settings)
    if options.quick:
        settings = deep_merge(settings, {"als": {"max_iter": min(settings["als"]["max_iter"],
                                                                 QUICK_MAX_ITER)}})
    return settings


def evaluation_params(settings: dict, protocol: Protocol) -> EvaluationParams:
    """conf [evaluation] with the protocol's split; ``TABLE_K`` always among the cut-offs."""
    ks = tuple(sorted({*settings["evaluation"].get("ks", ()), TABLE_K}))
    return params_from_settings(settings["evaluation"], **{**protocol.evaluation, "ks": ks})


def tuning_budget(settings: dict, options: RunOptions) -> tuning.TuningParams:
    return tuning.params_from_settings(settings["tuning"], budget_minutes=options.tuning_minutes,
                                       max_trials=options.tuning_trials)


def tuned_settings(dataset: Dataset, settings: dict, params: EvaluationParams,
                   options: RunOptions) -> tuple[dict, dict]:
    """``settings`` with the ALS, EASE, ranker and hybrid winners of ``jobs.tuning.tune``
    laid over them, and the tuning summary. tune carves its validation split out of
    the training part of ``params``' split: the held-out part is never seen."""
    budget = tuning_budget(settings, options)
    trials = tuning.tune(dataset.interactions, dataset.products, dataset.as_of, settings, params, budget)
    document = tuning.tuned_document(trials, f"bench-{dataset.name}", dataset.as_of, budget)
    winners = document["settings"]
    tuned = deep_merge(settings, {name: winners[name] for name in ("als", "ease", "ranked") if name in winners})
    tuned["hybrid"]["weights"] = dict(winners["hybrid"]["weights"])  # replaced, not merged
    return tuned, {key: document[key] for key in ("metric", "settings", "scores", "trials")}


def tuned_implicit_params(dataset: Dataset, settings: dict, params: EvaluationParams,
                          options: RunOptions) -> tuple[als.AlsParams, dict]:
    """implicit's ALS searched as ``jobs.tuning`` searches ours: the same validation split,
    search space, seeded sampler, trial count and ALS share of the time budget; trial 0
    is conf's setting. Returns the winner and a summary like ``tuned_settings``'."""
    budget = tuning_budget(settings, options)
    validation = tuning.prepare_validation(dataset.interactions, dataset.products, dataset.as_of, settings, params,
                                           budget)
    base = als.params_from_settings(settings["als"])

    def fit(trial) -> tuple:
        p = tuning.suggest_als(trial, base, budget)
        run = implicit_als.run_implicit_als(validation.split, p, options.threads, implicit_als.TUNED)
        return run.candidates, tuning.tuned_als_settings(p)

    deadline = time.monotonic() + budget.budget_minutes * 60 * budget.als_budget_share
    trials = tuning.run_trials(tuning.open_study(implicit_als.TUNED, budget, None, params.split), implicit_als.TUNED,
                               tuning.als_fixed(base), fit, validation, budget, deadline)
    best = tuning.best_trial(trials, budget)
    key = f"{budget.metric}@{budget.k}"
    return (als.params_from_settings({**settings["als"], **best.params}),
            {"settings": best.params, "scores": {"conf": trials[0].metrics.get(key), "best": best.metrics.get(key),
                                                 "best_trial": best.number, "trials": len(trials)}})


def time_spark_als(split: PreparedSplit, params: als.AlsParams) -> float:
    """Seconds for Spark's ALS on the training part: confidences, fit, user lists
    (materialised), as the evaluation builds them."""
    with timed(f"Spark ALS: fit (rank {params.rank}, {params.max_iter} iterations) + top-N lists") as run:
        candidates, _ = als.als_candidates(split.train, split.train_until, params, product_lists=False)
        candidates.localCheckpoint().count()
    return run.seconds


def run_protocol(protocol: Protocol, dataset: Dataset, conf: dict, options: RunOptions) -> ProtocolRun:
    """Tune (if the protocol says so), split once, train every algorithm and both ALS
    on the training part, score them all together."""
    settings = protocol_settings(conf, protocol, options)
    params = evaluation_params(settings, protocol)
    seconds: dict[str, float] = {}
    tuning_summary = None
    implicit_params = als.params_from_settings(settings["als"])
    if protocol.tune:
        with timed(f"{protocol.name}: tuning implicit's ALS on validation data") as watch:
            implicit_params, implicit_summary = tuned_implicit_params(dataset, settings, params, options)
        seconds["tuning_implicit"] = watch.seconds
        with timed(f"{protocol.name}: tuning ALS, EASE, the ranker and the hybrid on validation data") as watch:
            settings, tuning_summary = tuned_settings(dataset, settings, params, options)
        seconds["tuning"] = watch.seconds
        tuning_summary["scores"][implicit_als.TUNED] = implicit_summary["scores"]
        tuning_summary["settings"][implicit_als.TUNED] = implicit_summary["settings"]
        log.info("%s: tuned settings %s", protocol.name, tuning_summary["settings"])

    with timed(f"{protocol.name}: split") as watch:
        split = prepare_split(dataset.interactions, dataset.as_of, params)
    seconds["split"] = watch.seconds
    with timed(f"{protocol.name}: training {', '.join(params.algorithms)}") as watch:
        candidates, _ = train_all(split.train, dataset.products, split.train_until, settings, params.algorithms)
    seconds["train_all"] = watch.seconds

    als_params = als.params_from_settings(settings["als"])
    seconds["spark_als"] = time_spark_als(split, als_params)
    reference = implicit_als.run_implicit_als(split, als_params, options.threads)
    seconds["implicit_als"], seconds["implicit_als_prepare"] = reference.seconds, reference.prepare_seconds
    references = reference.candidates
    algorithms = (BASELINE, *params.algorithms, implicit_als.ALGORITHM)
    if protocol.tune:
        tuned_reference = implicit_als.run_implicit_als(split, implicit_params, options.threads, implicit_als.TUNED)
        references = references.unionByName(tuned_reference.candidates)
        algorithms += (implicit_als.TUNED,)

    with timed(f"{protocol.name}: scoring {', '.join(algorithms)}") as watch:
        results = score_algorithms(candidates.unionByName(references), split, algorithms,
                                   dataset.products.where("active").count(), params.ks)
    seconds["scoring"] = watch.seconds

    return ProtocolRun(
        protocol=protocol, dataset=dataset.describe(), params=params,
        settings={"als": asdict(als_params), "hybrid": settings["hybrid"],
                  "ranked": {k: v for k, v in asdict(ranked.params_from_settings(settings)).items()
                             if k != "generator_settings"},
                  implicit_als.TUNED: asdict(implicit_params)},
        split=split_summary(split), results=results, seconds=seconds,
        implicit={"users": reference.users, "products": reference.products, "pairs": reference.pairs},
        tuning=tuning_summary)


def split_summary(split: PreparedSplit) -> dict:
    return {"train_until": iso(split.train_until), "training_rows": split.train.count(),
            "users_scored": split.held_out.count()}
