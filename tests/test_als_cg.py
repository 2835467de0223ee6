"""Conjugate-gradient ALS on Spark (jobs.als_cg): the blocks hold every rating once,
and the distributed fit is implicit's own fit, factor for factor."""
from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from bench.als_topk.interactions import generate
from jobs import als_cg

ALPHA = 10.0


def test_csr_arrays_sort_columns_within_rows_and_keep_empty_rows():
    indptr, indices, values = als_cg.csr_arrays(np.array([2, 0, 2, 0]), np.array([5, 3, 1, 4]),
                                                np.array([1.0, 2.0, 3.0, 4.0]), n_rows=4)
    assert indptr.tolist() == [0, 2, 2, 4, 4]
    assert indices.tolist() == [3, 4, 1, 5]
    assert values.tolist() == [2.0, 4.0, 3.0, 1.0]
    assert (indptr.dtype, indices.dtype, values.dtype) == (np.int32, np.int32, np.float32)


@pytest.mark.parametrize("n_blocks", [1, 3, 7])
def test_side_blocks_tile_the_rows_and_hold_every_entry_once(n_blocks):
    users, items, ratings = generate(90, 40, 700, seed=5)
    n_rows = int(users.max()) + 1
    blocks = als_cg.side_blocks(users, items, ratings, n_rows, n_blocks)

    assert 1 <= len(blocks) <= n_blocks
    seen, covered = {}, []
    for first, indptr, indices, values in blocks:
        assert indptr[0] == 0 and indptr[-1] == len(indices) == len(values)
        covered.append((first, len(indptr) - 1))
        for offset in range(len(indptr) - 1):
            for at in range(indptr[offset], indptr[offset + 1]):
                seen[(first + offset, int(indices[at]))] = float(values[at])
    assert seen == {(int(u), int(i)): float(r) for u, i, r in zip(users, items, ratings)}
    # The row ranges tile 0..n-1 with no gap and no overlap, with about as many entries each.
    assert covered[0][0] == 0 and sum(n for _, n in covered) == n_rows
    assert all(a + n == b for (a, n), (b, _) in zip(covered, covered[1:]))
    sizes = [len(indices) for _, _, indices, _ in blocks]
    assert max(sizes) <= len(users) / n_blocks + max(np.bincount(users))


@pytest.mark.spark
def test_fit_on_spark_is_implicits_fit_with_the_same_seed(spark):
    """The same initial factors and the same kernel per row, so the distributed fit and
    implicit's single-process fit agree to float rounding, whatever the blocks."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    users, items, ratings = generate(300, 120, 5000, seed=7)
    n_users, n_items, rank, iterations, regularization = int(users.max()) + 1, int(items.max()) + 1, 8, 3, 0.05
    frame = spark.createDataFrame([(int(u), int(i), float(r)) for u, i, r in zip(users, items, ratings)],
                                  "user int, item int, rating float")

    ours = als_cg.fit(frame, n_users, n_items, rank, iterations, regularization, ALPHA, seed=1, n_blocks=3)

    matrix = csr_matrix(((1 + ALPHA * ratings).astype(np.float32), (users, items)), shape=(n_users, n_items))
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=rank, iterations=iterations, regularization=regularization,
                                        alpha=1.0, num_threads=1, random_state=1)
        model.fit(matrix, show_progress=False)
    start = als_cg.initial_factors(n_users, n_items, rank, seed=1)
    assert np.abs(start.users - ours.users).max() > 0.1  # it moved from the start
    np.testing.assert_allclose(ours.users, model.user_factors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.items, model.item_factors, rtol=1e-5, atol=1e-6)


def test_initial_factors_are_seeded_and_small():
    a, b = als_cg.initial_factors(5, 3, 4, seed=9), als_cg.initial_factors(5, 3, 4, seed=9)
    assert a.users.shape == (5, 4) and a.items.shape == (3, 4) and a.users.dtype == np.float32
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    assert 0 <= a.users.min() and a.users.max() < als_cg.INITIAL_SCALE


@pytest.mark.parametrize(("master", "slots"), [
    ("local", 1), ("local[3]", 3), ("local[3, 2]", 3), ("local[*]", os.cpu_count()),
    ("spark://host:7077", 12), ("yarn", 12)])
def test_task_slots_come_from_a_local_master_else_the_default_parallelism(master, slots):
    assert als_cg.task_slots(master, default_parallelism=12) == slots


@pytest.mark.parametrize(("ratings", "slots", "blocks"), [
    (1_000_000, 2, 2), (12_900_000, 2, 4), (8_000_000, 2, 2), (8_000_001, 2, 4), (0, 2, 2), (50, 3, 3)])
def test_block_count_fills_every_wave_and_keeps_blocks_under_the_cap(ratings, slots, blocks, monkeypatch):
    monkeypatch.setattr(als_cg, "MAX_BLOCK_RATINGS", 4_000_000)
    assert als_cg.block_count(ratings, slots) == blocks
