"""best_per_row against a plain-Python sort: score descending, ties to the smaller id."""
from __future__ import annotations

import numpy as np
import pytest

from jobs.top_n import best_per_row, padded_width


def _plain(row, ids, score, rows, top_n):
    lengths, out_ids, out_scores = [], [], []
    for r in range(rows):
        items = sorted((-s, i) for rr, i, s in zip(row, ids, score) if rr == r)[:top_n]
        lengths.append(len(items))
        out_ids += [i for _, i in items]
        out_scores += [-s for s, _ in items]
    return lengths, out_ids, out_scores


@pytest.mark.parametrize("shape", ["even", "one_long_row", "long_rows_at_the_ends", "mostly_empty", "unsorted",
                                   "wide_ties"])
def test_best_per_row_matches_plain_sort(shape):
    """Ties in score (scores drawn from 5 values), empty rows, rows shorter than top_n;
    a very long row takes the one-sort path while the others are padded, and the two
    parts interleave back in row order (long rows first, last and side by side too);
    rows out of order are sorted first; rows of 20-60 items drawn from 2 scores tie
    many items with the top_n-th best; a few one-item rows among empty ones take
    the one sort alone."""
    rng = np.random.default_rng(3)
    rows, top_n = 40, 6
    counts = rng.integers(0, 12, rows)
    counts[[4, 9]] = 0
    if shape == "one_long_row":
        counts[7] = 2_000
    if shape == "long_rows_at_the_ends":
        counts[[0, 20, 21, rows - 1]] = [900, 700, 800, 1_000]
    if shape == "wide_ties":
        counts = rng.integers(20, 60, rows)
    if shape == "mostly_empty":
        counts = np.zeros(rows, int)
        counts[[5, 17, 30]] = 1
    row = np.repeat(np.arange(rows), counts)
    ids = np.concatenate([rng.choice(5_000, c, replace=False) for c in counts]).astype(np.int64)
    score = rng.choice([1.0, 2.0] if shape == "wide_ties" else [0.5, 1.0, 1.5, 2.0, 2.5], len(row))
    if shape == "unsorted":
        shuffle = rng.permutation(len(row))
        row, ids, score = row[shuffle], ids[shuffle], score[shuffle]

    lengths, got_ids, got_scores = best_per_row(row, ids, score, rows, top_n)

    want_lengths, want_ids, want_scores = _plain(row.tolist(), ids.tolist(), score.tolist(), rows, top_n)
    assert lengths.tolist() == want_lengths
    assert got_ids.tolist() == want_ids
    assert got_scores.tolist() == want_scores


def test_padded_width_leaves_out_what_padding_would_cost_most():
    """Rows of about equal length are all padded; a row far longer than a hundred others
    is left to the one sort (beside four, padding them to it costs less); a few items
    in many empty rows all go to the one sort."""
    assert padded_width(np.array([8, 10, 9, 10]), top_n=5) == 10
    assert padded_width(np.r_[np.full(100, 10), 5_000], top_n=5) == 10
    assert padded_width(np.array([8, 10, 9, 10, 5_000]), top_n=5) == 5_000
    assert padded_width(np.r_[np.zeros(40, int), 1, 1], top_n=5) == 0
