"""The reference ALS: the ``implicit`` library's CPU model, fitted on the same training
part as Spark's, with the same input and hyper-parameters, its lists in the
candidates layout so the evaluation scores them like any algorithm's.

Input. Per (user, product), ``rating = log1p(sum of decayed event weights)``, computed
by the very functions Spark's job uses (``jobs.als.confidence_from_interactions``
over ``jobs.interactions.weighted``), collected to the driver.

Confidence. The job's ALS gives an observed pair confidence ``c = 1 + alpha *
rating`` (preference 1). implicit 0.7.3 takes the matrix value itself as the
confidence -- its solvers add ``(c - 1) y y^T`` to the normal equations and ``c y``
to the right-hand side, the job's terms exactly -- after multiplying the matrix by
its own ``alpha``. So the matrix holds ``1 + alpha * rating`` and implicit's
``alpha`` stays 1.0 (its fit skips the multiplication then).

Solver. The job's default solver (``jobs.als_cg``) runs implicit's own
conjugate-gradient kernel (``use_cg``, its default: 3 steps per row from the last
iteration's factors) with the regularisation added as it is, distributed over
Spark; only the random initial factors differ. With ``solver = "spark"`` the job
uses Spark ML's ALS instead, which solves each row exactly and multiplies
``regParam`` by the row's number of ratings (ALS-WR).

Lists. The ``top_n`` products per user by factor dot product, minus what the user
purchased in the training part, as Spark's job lists them: ``recommend`` filters
the items in the rows of ``user_items``, so it gets a purchases-only matrix.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import implicit
import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from jobs import als
from jobs.candidates import as_candidates, model_version
from jobs.evaluation import PreparedSplit
from jobs.interactions import weighted

from bench.quality.timing import timed

ALGORITHM = "implicit_als"
# implicit's ALS with its own hyper-parameters, searched like ours (bench.quality.protocols).
TUNED = "implicit_als_tuned"
# implicit marks the masked slots of a short list with the lowest float32.
MASKED_SCORE = np.finfo(np.float32).min


@dataclass
class TrainingMatrices:
    """The training part on the driver: row i is user ``user_ids[i]``, column j
    product ``product_ids[j]`` (both ascending)."""
    user_ids: np.ndarray
    product_ids: np.ndarray
    confidence: csr_matrix  # 1 + alpha * rating on observed pairs
    purchases: csr_matrix   # 1 on purchased pairs: what the lists leave out


@dataclass
class ImplicitRun:
    candidates: DataFrame    # CANDIDATES layout, algorithm implicit_als, materialised
    prepare_seconds: float   # Spark aggregation + collect + CSR build (not in the ratio)
    seconds: float           # fit + top-N lists: the figure compared with Spark's
    users: int
    products: int
    pairs: int


def _positions(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of ``values`` present in ``sorted_ids``, their positions there)."""
    if not len(sorted_ids):
        return np.zeros(len(values), bool), np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    known = sorted_ids[at] == values
    return known, at[known]


def training_matrices(split: PreparedSplit, params: als.AlsParams) -> TrainingMatrices:
    """Confidences and purchases of ``split.train`` as CSR matrices (see the module docstring)."""
    ratings = als.confidence_from_interactions(weighted(split.train, split.train_until, params)).toPandas()
    user_ids, rows = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
    product_ids, cols = np.unique(ratings["product_id"].to_numpy(), return_inverse=True)
    shape = (len(user_ids), len(product_ids))
    confidence = csr_matrix(((1.0 + params.alpha * ratings["rating"].to_numpy()).astype(np.float32),
                             (rows, cols)), shape=shape)
    # As Spark's job: every purchase up to the clock, whatever its weight.
    bought = (split.train.where((F.col("event_type") == "purchase")
                                & (F.col("timestamp") <= F.lit(split.train_until)))
              .select("user_id", "product_id").distinct().toPandas())
    known_user, bought_rows = _positions(user_ids, bought["user_id"].to_numpy())
    known_product, bought_cols = _positions(product_ids, bought["product_id"].to_numpy()[known_user])
    purchases = csr_matrix((np.ones(len(bought_cols), np.float32), (bought_rows[known_product], bought_cols)),
                           shape=shape)
    return TrainingMatrices(user_ids, product_ids, confidence, purchases)


def fit_and_recommend(matrices: TrainingMatrices, params: als.AlsParams,
                      threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(item positions, scores), one row per user, best first; masked slots score ``MASKED_SCORE``."""
    # implicit runs its own threads; a BLAS thread pool under them slows it down
    # many times over (implicit warns about exactly this).
    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(
            factors=params.rank, iterations=params.max_iter, regularization=params.reg_param,
            alpha=1.0, use_gpu=False, num_threads=threads, random_state=params.seed)
        model.fit(matrices.confidence, show_progress=False)
        users = np.arange(len(matrices.user_ids))
        return model.recommend(users, matrices.purchases, N=min(params.top_n, len(matrices.product_ids)),
                               filter_already_liked_items=True)


def lists_frame(spark, matrices: TrainingMatrices, positions: np.ndarray, scores: np.ndarray,
                version: str, algorithm: str = ALGORITHM) -> DataFrame:
    """implicit's lists as CANDIDATES rows; masked slots dropped, users left with
    nothing dropped (as Spark's job does)."""
    keep = scores > MASKED_SCORE
    lengths = keep.sum(axis=1)
    has_list = lengths > 0
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths[has_list])]).astype(np.int32))
    table = pa.table({
        "subject_id": pa.array(matrices.user_ids[has_list]).cast(pa.string()),
        "product_ids": pa.ListArray.from_arrays(offsets, pa.array(matrices.product_ids[positions[keep]])),
        "scores": pa.ListArray.from_arrays(offsets, pa.array(scores[keep].astype(np.float32))),
    })
    return as_candidates(spark.createDataFrame(table), "user", algorithm, version)


def run_implicit_als(split: PreparedSplit, params: als.AlsParams, threads: int,
                     algorithm: str = ALGORITHM) -> ImplicitRun:
    """implicit's ALS on ``split.train``: its user lists and how long it took."""
    with timed("implicit ALS: confidence matrix collected") as prepare:
        matrices = training_matrices(split, params)
    with timed(f"implicit ALS {implicit.__version__}: fit (rank {params.rank}, {params.max_iter} iterations)"
               " + top-N lists") as run:
        positions, scores = fit_and_recommend(matrices, params, threads)
    spark = split.train.sparkSession
    version = model_version(algorithm, split.train_until, asdict(params))
    candidates = lists_frame(spark, matrices, positions, scores, version, algorithm).localCheckpoint()
    return ImplicitRun(candidates, prepare.seconds, run.seconds, len(matrices.user_ids),
                       len(matrices.product_ids), matrices.confidence.nnz)
