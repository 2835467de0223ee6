"""The best ``n`` items of many rows at once, with NumPy: the last step of every
gather-then-rank list builder (hybrid fusion, popularity's and content's user
lists), and the top-K columns of ALS's score blocks.

Ordering is ``top_n_lists``'s (jobs.candidates): score descending, ties to the
smaller product id, so a NumPy builder and its Spark formulation agree exactly."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


# What ranking costs, relative to one padded cell of a row sorted whole (measured on
# heavy-tailed rows, 3M items, a top 100): a padded cell of a row wide enough to be
# partitioned first costs 2 (_contenders), an item in the one lexsort 12.
PARTITIONED_CELL_COST = 2
SORTED_ITEM_COST = 12


def positions_in_runs(lengths: np.ndarray) -> np.ndarray:
    """For consecutive runs of the given lengths, each element's position in its run:
    ``[2, 3] -> [0, 1, 0, 1, 2]``."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def best_per_row(row: np.ndarray, ids: np.ndarray, score: np.ndarray, rows: int, top_n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lengths, ids, scores)``: rows ``0 .. rows-1`` in order, each with its ``top_n``
    best items (``row[i]`` owns item ``ids[i]`` scoring ``score[i]``), concatenated.
    An item must appear at most once per row.

    Each row is sorted on its own, in a ``rows x longest row`` matrix: rows of a few
    hundred items sort in cache, 5x faster than one ``lexsort`` of every item by
    (row, score, id). Rows too long to pad the others to (a user who touched hundreds
    of products, among users who touched ten) take that one ``lexsort``, over their
    own items only."""
    if np.any(row[1:] < row[:-1]):
        order = np.argsort(row, kind="stable")
        row, ids, score = row[order], ids[order], score[order]
    per_row = np.bincount(row, minlength=rows)
    width = padded_width(per_row, top_n)
    if width == 0:
        return _sorted_best(row, ids, score, per_row, top_n)
    long_rows = per_row > width
    if not long_rows.any():
        return _padded_best(row, ids, score, per_row, top_n)
    long_items = long_rows[row]
    short = _padded_best(row[~long_items], ids[~long_items], score[~long_items], np.where(long_rows, 0, per_row),
                         top_n)
    long = _sorted_best(row[long_items], ids[long_items], score[long_items], np.where(long_rows, per_row, 0),
                        top_n)
    lengths = short[0] + long[0]
    from_long = np.repeat(long_rows, lengths)  # both parts are in row order: interleave by row
    merged = []
    for short_values, long_values in zip(short[1:], long[1:]):
        values = np.empty(len(from_long), short_values.dtype)
        values[from_long], values[~from_long] = long_values, short_values
        merged.append(values)
    return lengths, merged[0], merged[1]


def padded_width(per_row: np.ndarray, top_n: int) -> int:
    """The width to pad rows to, rows longer than it taken by one lexsort: the row
    length (or 0, every row by the lexsort) that costs least by the costs above."""
    widths = np.unique(np.r_[0, per_row])
    ascending = np.sort(per_row)
    longer = ascending.sum() - np.r_[0, np.cumsum(ascending)][np.searchsorted(ascending, widths, side="right")]
    cell = np.where(widths > 2 * top_n, PARTITIONED_CELL_COST, 1)
    return int(widths[np.argmin(len(per_row) * widths * cell + SORTED_ITEM_COST * longer)])


def _sorted_best(row: np.ndarray, ids: np.ndarray, score: np.ndarray, per_row: np.ndarray, top_n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """best_per_row by one lexsort of every item by (row, score, id): ``row`` sorted,
    ``per_row`` its counts."""
    order = np.lexsort((ids, -score, row))
    keep = positions_in_runs(per_row) < top_n
    return np.minimum(per_row, top_n), ids[order][keep], score[order][keep]


def _padded_best(row: np.ndarray, ids: np.ndarray, score: np.ndarray, per_row: np.ndarray, top_n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """best_per_row by a sort of each row in a ``rows x longest row`` matrix: ``row``
    sorted, ``per_row`` its counts."""
    width = int(per_row.max(initial=0))
    padded_ids, negated = by_row(row, per_row, width, (ids, np.iinfo(ids.dtype).max), (-score, np.inf))
    if width > 2 * top_n:  # narrower rows: the partition costs about what it saves
        padded_ids, negated = _contenders(padded_ids, negated, top_n)
    best = np.lexsort((padded_ids, negated), axis=1)[:, :top_n]
    lengths = np.minimum(per_row, top_n)
    listed = np.arange(best.shape[1]) < lengths[:, None]  # padding sorts last
    return (lengths, np.take_along_axis(padded_ids, best, axis=1)[listed],
            -np.take_along_axis(negated, best, axis=1)[listed])


def _contenders(padded_ids: np.ndarray, negated: np.ndarray, top_n: int) -> list[np.ndarray]:
    """The padded rows cut to the items that can make their row's ``top_n``: those not
    below the row's ``top_n``-th best score (every item tied with it kept, so the sort
    that follows still breaks ties by id), padded again. A partition and a sort of
    ~``top_n`` items per row instead of a sort of the whole row: 2.1x faster for rows
    of ~1,000 items and a top 200, 3.4x for ~3,000 (and 17 % slower for rows of
    ~120 and a top 100, hence best_per_row's threshold)."""
    cut = np.partition(negated, top_n - 1, axis=1)[:, top_n - 1]
    rows, columns = np.nonzero(~(negated > cut[:, None]))  # not "<=": a NaN stays, as it would unsorted
    per_row = np.bincount(rows, minlength=len(negated))
    return by_row(rows, per_row, int(per_row.max(initial=0)),
                  (padded_ids[rows, columns], np.iinfo(padded_ids.dtype).max), (negated[rows, columns], np.inf))


def by_row(row: np.ndarray, per_row: np.ndarray, width: int, *columns: tuple[np.ndarray, object]
           ) -> list[np.ndarray]:
    """``columns`` (``(values, fill)`` pairs) laid out as ``len(per_row) x width``
    matrices, row ``r`` holding the values of the items with ``row == r`` in order and
    ``fill`` after them. ``row`` must be sorted, ``per_row`` its counts."""
    at = row * width + positions_in_runs(per_row)  # flat positions: ~25% faster to assign than (row, slot) pairs
    matrices = []
    for values, fill in columns:
        matrix = np.full(len(per_row) * width, fill, dtype=values.dtype)
        matrix[at] = values
        matrices.append(matrix.reshape(len(per_row), width))
    return matrices


# The Spark schema of lists_batch's rows: one ranked list per subject.
LISTS_SCHEMA = "subject_id string, product_ids array<bigint>, scores array<float>"


def lists_batch(subjects: pa.Array, lengths: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> pa.RecordBatch:
    """``(subject_id, product_ids, scores)`` rows (LISTS_SCHEMA), scores as float32."""
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    return pa.RecordBatch.from_arrays(
        [subjects, pa.ListArray.from_arrays(offsets, pa.array(ids, pa.int64())),
         pa.ListArray.from_arrays(offsets, pa.array(scores.astype(np.float32)))],
        ["subject_id", "product_ids", "scores"])


def ranked_lists_batch(subject_ids: np.ndarray, columns: np.ndarray, values: np.ndarray,
                       item_ids: np.ndarray) -> pa.RecordBatch:
    """top_columns' ``(columns, values)`` as a lists batch: each row's items best first
    (ties: smaller id), ``-inf`` padding dropped, rows left with nothing dropped; subject
    ids as strings."""
    ids = item_ids[columns]
    order = np.lexsort((ids, -values), axis=1)
    ids, values = np.take_along_axis(ids, order, axis=1), np.take_along_axis(values, order, axis=1)
    keep = np.isfinite(values)  # excluded items sort last and drop out here
    lengths = keep.sum(axis=1)
    listed = lengths > 0
    return lists_batch(pa.array(subject_ids[listed]).cast(pa.string()), lengths[listed], ids[keep], values[keep])


def top_columns(scores: np.ndarray, k: int, floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(columns, values)``, each ``rows x k``: per row of ``scores``, the columns of
    its ``k`` highest values, in no particular order (ties at the k-th value: any of
    them). Rows with fewer than ``k`` columns at or above ``floor`` are padded with
    ``-inf`` values, which the caller drops.

    ``floor``, per row, must be no higher than the row's k-th highest value (e.g. the
    k-th highest over a sample of its columns). Then only the columns at or above it
    are ranked: on 100k-wide rows with ~2k such columns, one comparison pass and a
    small ``argpartition`` cost about a third of an ``argpartition`` over the full
    rows, which writes an int64 index for every score."""
    if floor is None:
        best = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k:]
        return best, np.take_along_axis(scores, best, axis=1)
    above = np.flatnonzero(scores >= floor[:, None])
    rows, columns = np.divmod(above, scores.shape[1])
    per_row = np.bincount(rows, minlength=len(scores))
    width = max(int(per_row.max(initial=0)), k)
    candidates, values = by_row(rows, per_row, width, (columns, 0), (scores.reshape(-1)[above], -np.inf))
    best = np.argpartition(values, width - k, axis=1)[:, width - k:]
    return np.take_along_axis(candidates, best, axis=1), np.take_along_axis(values, best, axis=1)
