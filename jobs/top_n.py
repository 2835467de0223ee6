"""The best ``n`` items of many rows at once, with NumPy: the last step of every
gather-then-rank list builder (hybrid fusion, popularity's user lists).

Ordering is ``top_n_lists``'s (jobs.candidates): score descending, ties to the
smaller product id, so a NumPy builder and its Spark formulation agree exactly."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def best_per_row(row: np.ndarray, ids: np.ndarray, score: np.ndarray, rows: int, top_n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lengths, ids, scores)``: rows ``0 .. rows-1`` in order, each with its ``top_n``
    best items (``row[i]`` owns item ``ids[i]`` scoring ``score[i]``), concatenated.
    An item must appear at most once per row."""
    order = np.lexsort((ids, -score, row))
    row, ids, score = row[order], ids[order], score[order]
    row_starts = np.searchsorted(row, np.arange(rows))
    keep = np.arange(len(row)) - np.repeat(row_starts, np.diff(np.r_[row_starts, len(row)])) < top_n
    return np.bincount(row[keep], minlength=rows), ids[keep], score[keep]


def lists_batch(subjects: pa.Array, lengths: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> pa.RecordBatch:
    """``(subject_id, product_ids, scores)`` rows (LISTS_SCHEMA), scores as float32."""
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    return pa.RecordBatch.from_arrays(
        [subjects, pa.ListArray.from_arrays(offsets, pa.array(ids, pa.int64())),
         pa.ListArray.from_arrays(offsets, pa.array(scores.astype(np.float32)))],
        ["subject_id", "product_ids", "scores"])
