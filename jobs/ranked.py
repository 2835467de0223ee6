"""Ranked: a learned ranking stage over every generator's candidates (LightGBM lambdarank).

Training (on the driver, bounded): the generators (jobs.generators) are trained on the
interactions before ``as_of - label_days``, for a seeded sample of the users active
after that; each user's candidates -- the union of the generators' lists, ``depth``
deep each -- get features (jobs.ranking_features) as of that split and a graded label
from what the user did next (e.g. view 1 < add to cart 2 < purchase 3). With
``label_split = "random"`` the labels are instead a seeded share of each user's
products, held out of what the generators see (for offline protocols that hold out
a random share: the model then learns the task it is scored on). Users whose
candidates caught nothing carry no ranking signal and are left out; the rows kept are
at most ``max_train_rows``. A share of the users is held back for early stopping.

Scoring (distributed): the stored generator lists of every user get the same features
as of ``as_of``; the model, broadcast in LightGBM's text format, scores them in
``mapInPandas``; each user's ``top_n`` best become the ``ranked`` list.

The model is saved (text format, no pickle) with its feature list, category
vocabularies and gain importance under ``<data_dir>/models/ranked/<version>/``. A run
reuses the newest saved model trained on the same settings at most ``retrain_days``
before its as-of (training costs as much as scoring every user; what a user is likely
to do next shifts slowly), so a nightly schedule retrains about weekly; ``--retrain``
trains regardless, ``--model`` scores with a given saved one. A model that cannot be read,
or whose features are not the ones this configuration computes, stops the job with
one line and leaves the candidates table (and so the served snapshot) as it was.

Run: ``python -m jobs.ranked --help`` or ``spark-submit jobs/ranked.py --help``.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator, Mapping

import lightgbm as lgb
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from schemas.storage import Location

from jobs.candidates import as_candidates, model_version, params_digest, replace_algorithm_candidates, top_n_lists
from jobs.generators import GENERATORS, generator_lists
from jobs.interactions import check_decay, read_interactions, read_profiles
from jobs.paths import DataPaths
from jobs.ranking_features import (FeatureSpec, candidate_pairs, category_vocabularies, encode_categorical,
                                   graded_labels, pair_features)

log = logging.getLogger(__name__)

ALGORITHM = "ranked"
MODELS_DIR = Path("models") / ALGORITHM
MODEL_FILE, FEATURES_FILE = "model.txt", "features.json"
SCORED_SCHEMA = "user_id long, product_id long, score double"
LABEL_SPLITS = ("temporal", "random")
# The job settings sections the generators read (jobs.generators).
GENERATOR_SECTIONS = {"popular": "popularity", "als": "als", "ease": "ease", "content": "content"}


class RankerModelError(RuntimeError):
    """A saved model that cannot be used: unreadable, or trained on other features."""


@dataclass(frozen=True)
class RankedParams:
    generators: tuple[str, ...] = GENERATORS
    depth: int = 50                      # each generator's first products per user become candidates
    top_n: int = 100
    label_days: float = 1.0              # the last days before as-of label the training candidates
    # "temporal": labels from the last label_days (what a nightly run predicts: what comes
    # next); "random": from a seeded label_share of each user's products, for offline
    # protocols that hold out a random share.
    label_split: str = "temporal"
    label_share: float = 0.25
    label_grades: dict[str, int] = field(default_factory=lambda: {
        "view": 1, "click": 1, "wishlist": 2, "add_to_cart": 2, "purchase": 3})
    max_train_users: int = 20_000        # labelled users sampled (seeded) for training
    max_train_rows: int = 2_000_000      # candidate rows collected on the driver, at most
    validation_share: float = 0.2        # of the training users, held back for early stopping
    num_leaves: int = 31
    learning_rate: float = 0.05
    num_boost_round: int = 300
    early_stopping_rounds: int = 30
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    max_category_values: int = 100       # a categorical feature's vocabulary: its most frequent values
    profile_features: tuple[str, ...] = ()
    product_features: tuple[str, ...] = ()
    half_life_days: float = 7.0          # popularity and affinity features' decay
    trend_days: float = 1.0
    event_weights: dict[str, float] = field(default_factory=lambda: {"view": 1.0, "purchase": 8.0})
    seed: int = 42
    retrain_days: float = 7.0            # a saved model this young, on these settings, is reused; 0: always train
    # The generators' own sections of the job settings (they are retrained at the label split).
    generator_settings: Mapping[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("generators", "profile_features", "product_features"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = set(self.generators) - set(GENERATORS)
        if not self.generators or unknown:
            raise ValueError(f"generators must name some of {GENERATORS}, not {sorted(unknown)}")
        if min(self.depth, self.top_n, self.max_train_users, self.max_train_rows, self.num_leaves,
               self.num_boost_round, self.min_data_in_leaf, self.max_category_values) < 1:
            raise ValueError("depth, top_n, max_train_*, num_leaves, num_boost_round, min_data_in_leaf "
                             "and max_category_values must be at least 1")
        if not (self.label_days > 0 and self.trend_days > 0 and 0 < self.validation_share < 1
                and self.retrain_days >= 0
                and 0 < self.learning_rate and 0 < self.feature_fraction <= 1):
            raise ValueError("label_days and trend_days must be positive, validation_share in (0, 1), "
                             "retrain_days >= 0, learning_rate positive, feature_fraction in (0, 1]")
        if self.label_split not in LABEL_SPLITS or not 0 < self.label_share < 1:
            raise ValueError(f"label_split must be one of {LABEL_SPLITS} and label_share in (0, 1)")
        if not all(isinstance(g, int) and 0 <= g <= 30 for g in self.label_grades.values()):
            raise ValueError("label_grades must be whole numbers from 0 to 30 (LightGBM's label gains)")
        check_decay(self)

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(self.generators, self.depth, dict(self.event_weights), self.half_life_days,
                           self.trend_days, self.profile_features, self.product_features)


@dataclass
class RankerModel:
    booster: lgb.Booster
    features: list[str]
    categorical: list[str]
    vocabularies: dict[str, list[str]]
    version: str
    trained: dict                         # what it was trained on, and how it did

    def importance(self) -> dict[str, float]:
        """Total gain per feature, largest first."""
        gains = self.booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.features, map(float, gains)), key=lambda kv: -kv[1]))


# --- training ---------------------------------------------------------------

@dataclass(frozen=True)
class LabelSplit:
    before: DataFrame     # what the generators and features see
    labels: DataFrame     # (user_id, product_id, label): the graded pairs to predict
    clock: datetime       # the generators' and features' as-of


def label_split(rows: DataFrame, as_of: datetime, params: RankedParams) -> LabelSplit:
    """Rows up to ``as_of`` cut into what the model sees and what it learns to predict."""
    rows = rows.where(F.col("timestamp") <= F.lit(as_of))
    if params.label_split == "temporal":
        start = as_of - timedelta(days=params.label_days)
        return LabelSplit(rows.where(F.col("timestamp") < F.lit(start)),
                          graded_labels(rows, params.label_grades, start, as_of), start)
    graded = graded_labels(rows, params.label_grades)
    per_user = Window.partitionBy("user_id")
    held = (graded.withColumn("_n", F.row_number().over(
                per_user.orderBy(F.xxhash64(F.lit(params.seed), "user_id", "product_id"), "product_id")))
            .withColumn("_size", F.count("*").over(per_user))
            .where(F.col("_n") <= F.floor(F.col("_size") * F.lit(params.label_share))).drop("_n", "_size"))
    return LabelSplit(rows.join(held, ["user_id", "product_id"], "left_anti"), held, as_of)


def labelled_users(split: LabelSplit, params: RankedParams) -> DataFrame:
    """``user_id`` of at most ``max_train_users`` users with a label and something seen
    before it (a seeded hash picks them)."""
    known = split.before.select("user_id").distinct()
    return (split.labels.select("user_id").distinct().join(known, "user_id", "left_semi")
            .orderBy(F.xxhash64(F.lit(params.seed), "user_id"), "user_id").limit(params.max_train_users))


def training_rows(rows: DataFrame, products: DataFrame, profiles: DataFrame | None, as_of: datetime,
                  params: RankedParams) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The labelled candidate rows the model learns from, on the driver, and the category
    vocabularies: candidates and features from what ``label_split`` leaves to see, labels
    from what it holds out."""
    spec = params.spec
    split = label_split(rows, as_of, params)
    before = split.before.localCheckpoint()
    users = labelled_users(replace(split, before=before), params).localCheckpoint()
    lists = generator_lists(before, products, split.clock, dict(params.generator_settings), params.generators,
                            for_users=users)
    features = pair_features(candidate_pairs(lists, spec), before, products, profiles, split.clock, spec)
    labelled = features.join(split.labels, ["user_id", "product_id"], "left").fillna(0.0, subset=["label"])
    # A user whose candidates caught none of what they did next teaches the ranking nothing.
    useful = labelled.groupBy("user_id").agg(F.max("label").alias("_best")).where(F.col("_best") > 0)
    labelled = labelled.join(useful.select("user_id"), "user_id", "left_semi").localCheckpoint()
    vocabularies = category_vocabularies(labelled, spec, params.max_category_values)
    labelled = encode_categorical(labelled, vocabularies)
    total = labelled.count()
    if total > params.max_train_rows:  # whole users are dropped, by the same seeded hash
        keep = labelled.select("user_id").distinct().orderBy(F.xxhash64(F.lit(params.seed + 1), "user_id"))
        keep = keep.limit(max(1, int(keep.count() * params.max_train_rows / total)))
        labelled = labelled.join(keep, "user_id", "left_semi")
        log.info("ranked: %d training rows, above max_train_rows; users sampled down", total)
    frame = labelled.toPandas()
    return frame.sort_values(["user_id", "product_id"], kind="stable").reset_index(drop=True), vocabularies


def query_groups(user_ids: np.ndarray) -> np.ndarray:
    """Sizes of the runs of equal ids in ``user_ids`` (sorted): LightGBM's query groups."""
    if len(user_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    return np.diff(np.r_[starts, len(user_ids)])


def fit_booster(frame: pd.DataFrame, features: list[str], categorical: list[str], params: RankedParams
                ) -> tuple[lgb.Booster, dict]:
    """A lambdarank booster on ``frame`` (sorted by user; ``label`` column), early-stopped on
    a seeded share of its users; and what it was trained on."""
    if frame.empty or not (frame["label"] > 0).any():
        raise ValueError("ranked: no training candidate was followed by a labelled event; "
                         "more data, a longer label_days or deeper lists are needed")
    users = frame["user_id"].to_numpy()
    held_back = (pd.util.hash_array(users.astype(np.int64)) % 1000) < params.validation_share * 1000
    if held_back.all() or not held_back.any():  # too few users to hold any back: stop on the training ones
        held_back = np.zeros(len(frame), dtype=bool)
    booster_params = {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "num_leaves": params.num_leaves,
        "learning_rate": params.learning_rate, "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction, "seed": params.seed, "deterministic": True,
        "force_row_wise": True, "verbosity": -1, "num_threads": 0,
        "max_cat_to_onehot": 4, "min_data_per_group": 20,
    }

    def dataset(mask: np.ndarray, reference=None) -> lgb.Dataset:
        part = frame[mask]
        return lgb.Dataset(part[features].to_numpy(dtype=np.float64, na_value=np.nan),
                           label=part["label"].to_numpy(dtype=np.int32), group=query_groups(part["user_id"].to_numpy()),
                           feature_name=features, categorical_feature=categorical or "auto", reference=reference,
                           free_raw_data=True)

    train = dataset(~held_back)
    validation = dataset(held_back, reference=train) if held_back.any() else train
    history: dict = {}
    booster = lgb.train(booster_params, train, num_boost_round=params.num_boost_round, valid_sets=[validation],
                        valid_names=["validation"],
                        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False),
                                   lgb.record_evaluation(history)])
    curve = history.get("validation", {}).get("ndcg@10", [])
    trained = {"rows": int(len(frame)), "users": int(len(np.unique(users))),
               "validation_users": int(len(np.unique(users[held_back]))),
               "positive_rows": int((frame["label"] > 0).sum()), "best_iteration": int(booster.best_iteration),
               "validation_ndcg@10": round(float(max(curve)), 6) if curve else None,
               "lightgbm": lgb.__version__}
    return booster, trained


def fit_ranker(rows: DataFrame, products: DataFrame, profiles: DataFrame | None, as_of: datetime,
               params: RankedParams) -> RankerModel:
    """Train the ranking model on the labels ``label_split`` holds out of the rows up to ``as_of``."""
    started = time.monotonic()
    frame, vocabularies = training_rows(rows, products, profiles, as_of, params)
    model = model_from_rows(frame, vocabularies, as_of, params)
    trained = model.trained
    log.info("ranked: model %s trained on %d rows of %d users in %.0f s (best iteration %d, validation "
             "NDCG@10 %s); top features by gain: %s", model.version, trained["rows"], trained["users"],
             time.monotonic() - started, trained["best_iteration"], trained["validation_ndcg@10"],
             ", ".join(list(model.importance())[:5]))
    return model


def model_from_rows(frame: pd.DataFrame, vocabularies: dict[str, list[str]], as_of: datetime,
                    params: RankedParams) -> RankerModel:
    """The model learnt from ``training_rows``' output, versioned by its settings and data."""
    features, categorical = list(params.spec.names), list(params.spec.categorical)
    booster, trained = fit_booster(frame, features, categorical, params)
    trained |= {"as_of": as_of.isoformat(), "settings": settings_digest(params)}
    version = model_version(ALGORITHM, as_of, {**ranker_config(params), "trained": trained})
    return RankerModel(booster, features, categorical, vocabularies, version, trained)


def ranker_config(params: RankedParams) -> dict:
    """The settings that shape the model (generator settings included; not the retraining
    cadence), for its version."""
    return {k: v for k, v in asdict(params).items() if k != "retrain_days"}


def settings_digest(params: RankedParams) -> str:
    """What a saved model must have been trained with to be reused."""
    return params_digest(ranker_config(params))


# --- scoring ----------------------------------------------------------------

def _score_batches(batches: Iterator[pd.DataFrame], model_text, features: list[str]) -> Iterator[pd.DataFrame]:
    booster = lgb.Booster(model_str=model_text.value)
    for batch in batches:
        values = batch[features].to_numpy(dtype=np.float64, na_value=np.nan)
        yield pd.DataFrame({"user_id": batch["user_id"], "product_id": batch["product_id"],
                            "score": booster.predict(values, num_threads=1) if len(batch) else []})


def ranked_lists(candidates: DataFrame, rows: DataFrame, products: DataFrame, profiles: DataFrame | None,
                 as_of: datetime, model: RankerModel, params: RankedParams) -> DataFrame:
    """Each user's candidates in ``candidates`` (the generators' user lists) re-ranked by
    ``model``, the best ``top_n`` of each, in the CANDIDATES layout."""
    check_features(model, params.spec)
    features = scoring_features(candidates, rows, products, profiles, as_of, model.vocabularies, params.spec)
    return scored_lists(features, model, params.top_n)


def scoring_features(candidates: DataFrame, rows: DataFrame, products: DataFrame, profiles: DataFrame | None,
                     as_of: datetime, vocabularies: dict[str, list[str]], spec: FeatureSpec) -> DataFrame:
    """One row per (user, candidate product) with the model's features, categories encoded."""
    return encode_categorical(pair_features(candidate_pairs(candidates, spec), rows, products, profiles,
                                            as_of, spec), vocabularies)


def scored_lists(features: DataFrame, model: RankerModel, top_n: int) -> DataFrame:
    """``features`` scored by ``model`` on the workers (its text broadcast), the best
    ``top_n`` per user, in the CANDIDATES layout."""
    model_text = features.sparkSession.sparkContext.broadcast(model.booster.model_to_string())
    scored = features.mapInPandas(partial(_score_batches, model_text=model_text, features=list(model.features)),
                                  SCORED_SCHEMA)
    return as_candidates(top_n_lists(scored, F.col("user_id"), top_n), "user", ALGORITHM, model.version)


def check_features(model: RankerModel, spec: FeatureSpec) -> None:
    """Raise RankerModelError unless ``model`` reads exactly the features ``spec`` computes."""
    if list(spec.names) != model.features or list(spec.categorical) != model.categorical:
        expected, got = set(spec.names), set(model.features)
        raise RankerModelError(
            f"ranked model {model.version} was trained on other features than this configuration computes "
            f"(model only: {sorted(got - expected) or '-'}; configuration only: {sorted(expected - got) or '-'}"
            f"{'; same names, other order' if expected == got else ''}); retrain it")


# --- the model on disk -------------------------------------------------------

def save_model(model: RankerModel, models_dir: Location) -> Location:
    """``<models_dir>/<version>/model.txt`` (LightGBM's text format) and ``features.json``."""
    folder = Location.of(models_dir) / model.version
    (folder / MODEL_FILE).write_text(model.booster.model_to_string())
    described = {"version": model.version, "features": model.features, "categorical": model.categorical,
                 "vocabularies": model.vocabularies, "trained": model.trained, "importance_gain": model.importance()}
    (folder / FEATURES_FILE).write_text(json.dumps(described, indent=1))
    return folder


def load_model(folder: "str | os.PathLike | Location") -> RankerModel:
    """The model saved in ``folder``; RankerModelError with the reason if it cannot be used."""
    folder = Location.of(folder)
    try:
        described = json.loads((folder / FEATURES_FILE).read_text())
        features, categorical = list(described["features"]), list(described["categorical"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RankerModelError(f"ranked model {folder}: {FEATURES_FILE} unreadable ({type(exc).__name__}: {exc})")
    try:
        booster = lgb.Booster(model_str=(folder / MODEL_FILE).read_text())
    except (lgb.basic.LightGBMError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankerModelError(f"ranked model {folder}: {MODEL_FILE} unreadable ({first_line})")
    if booster.feature_name() != features:
        raise RankerModelError(f"ranked model {folder}: {MODEL_FILE} has features {booster.feature_name()}, "
                               f"{FEATURES_FILE} lists {features}")
    return RankerModel(booster, features, categorical, described.get("vocabularies", {}),
                       described.get("version", folder.name), described.get("trained", {}))


def saved_models(models_dir: Location) -> list[Location]:
    """Saved model folders, the most recent first."""
    models_dir = Location.of(models_dir)
    saved = {}
    for name in models_dir.children():
        modified = (models_dir / name / MODEL_FILE).modified()
        if modified is not None:
            saved[models_dir / name] = modified
    return sorted(saved, key=saved.get, reverse=True)


def newest_model(models_dir: Location) -> Location:
    """The most recently saved model folder (RankerModelError if none)."""
    folders = saved_models(models_dir)
    if not folders:
        raise RankerModelError(f"no saved ranked model under {models_dir}")
    return folders[0]


def reusable_model(models_dir: Location, clock: datetime, params: RankedParams) -> RankerModel | None:
    """The newest model saved in ``models_dir`` that was trained on ``params``' settings
    at most ``retrain_days`` before ``clock`` (never after it: its labels must lie
    before what ``clock`` scores), or None. One that cannot be read is skipped, loudly."""
    if params.retrain_days <= 0:
        return None
    digest = settings_digest(params)
    for folder in saved_models(models_dir):
        try:
            trained = json.loads((folder / FEATURES_FILE).read_text()).get("trained", {})
            trained_at = datetime.fromisoformat(trained["as_of"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # saved before models recorded their clock, or unreadable: never reused
        age = clock - trained_at
        if trained.get("settings") != digest or not timedelta(0) <= age <= timedelta(days=params.retrain_days):
            continue
        try:
            model = load_model(folder)
            check_features(model, params.spec)
        except RankerModelError as exc:
            log.warning("%s; not reused", exc)
            continue
        log.info("ranked: reusing model %s, trained %.1f days before %s (retrain_days %g)",
                 model.version, age.total_seconds() / 86_400, clock.isoformat(), params.retrain_days)
        return model
    return None


def trained_or_reused(rows: DataFrame, products: DataFrame, profiles: DataFrame | None, clock: datetime,
                      params: RankedParams, models_dir: Location | None) -> RankerModel:
    """A model young enough from ``models_dir``, else one trained now (and saved there)."""
    if models_dir is not None and (model := reusable_model(models_dir, clock, params)) is not None:
        return model
    model = fit_ranker(rows, products, profiles, clock, params)
    if models_dir is not None:
        log.info("ranked: model saved in %s", save_model(model, models_dir))
    return model


# --- the job ----------------------------------------------------------------

def params_from_settings(settings: dict) -> RankedParams:
    """From the whole job settings: [ranked], and the generators' own sections."""
    section = dict(settings["ranked"])
    wanted = section.get("generators", GENERATORS)
    generator_settings = {GENERATOR_SECTIONS[g]: settings[GENERATOR_SECTIONS[g]] for g in wanted
                          if g in GENERATOR_SECTIONS}
    return RankedParams(**section, generator_settings=generator_settings)


def run_ranked(spark: SparkSession, paths: DataPaths, as_of: datetime, params: RankedParams,
               model_folder: Location | None = None) -> dict:
    """Train (or reuse, or load) the model, re-rank every user's stored generator lists, store the
    ranked ones; return the lists written per kind and the model's version."""
    model = None
    if model_folder is not None:  # before any table is read: a bad model stops the job at once
        model = load_model(model_folder)
        check_features(model, params.spec)
        log.info("ranked: scoring with saved model %s", model.version)
    read = spark.read.format("delta").load
    products = read(paths.table("products"))
    profiles = read_profiles(spark, paths)
    rows = read_interactions(spark, paths).persist()
    try:
        if model is None:
            model = trained_or_reused(rows, products, profiles, as_of, params, paths.root / MODELS_DIR)
        candidates = read(paths.table("candidates"))
        lists = ranked_lists(candidates, rows, products, profiles, as_of, model, params)
        counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, lists)
    finally:
        rows.unpersist()
    log.info("ranked lists written: %s", counts)
    return {"lists": counts, "model_version": model.version}


def main(argv: list[str] | None = None) -> int:
    from schemas.settings import load_conf

    from jobs.cli import configure_logging, data_paths, job_parser, resolve_as_of
    from jobs.spark_session import get_spark
    from jobs.tuned import with_tuned

    parser = job_parser(__doc__.split("\n\n")[0])
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--model", help="score with this saved model folder (or 'newest') instead of training")
    chosen.add_argument("--retrain", action="store_true",
                        help="train a model even when a saved one is younger than [ranked] retrain_days")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    paths = data_paths(load_conf("jobs"), args.data_dir)
    settings = with_tuned(load_conf("jobs"), paths.root)
    params = params_from_settings(settings)
    if args.retrain:
        params = replace(params, retrain_days=0.0)
    try:
        folder = None
        if args.model:
            folder = newest_model(paths.root / MODELS_DIR) if args.model == "newest" else Location.of(args.model)
        result = run_ranked(get_spark(f"recsys-{ALGORITHM}"), paths, resolve_as_of(args.as_of), params, folder)
    except RankerModelError as exc:
        log.error("%s; the candidates table and the served snapshot are unchanged", exc)
        return 1
    print(json.dumps({"algorithm": ALGORITHM, "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
