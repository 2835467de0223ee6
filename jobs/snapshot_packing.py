"""Snapshot records (the layouts of ``schemas.snapshot``) packed from Arrow columns.

Pure functions, no Spark and no I/O: the builder reads a pinned Delta version's
files with pyarrow and hands their columns here. Every function yields
``Records`` slices sorted by key, each key once (a repeated key keeps its last
row), so that the writer appends them to LMDB in order and fills every page.
The slices bound the memory a packed copy takes next to the Arrow columns.

Ranked lists of numeric subjects (users, products) are packed with NumPy,
whole slices at a time; anything else (category and segment keys, and lists
the vectorised path does not take: nulls, overlong lists, ids out of range)
goes record by record through ``schemas.snapshot.pack_ranked_list``, which
raises ``SnapshotFormatError`` for what cannot be packed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.fields import UINT32_MAX
from schemas.snapshot import (
    LIST_LAYOUT_VERSION, MAX_ITEMS, SnapshotFormatError, pack_product, pack_ranked_list,
    pack_user, product_key, subject_key, user_key,
)

SLICE_ROWS = 50_000  # records per slice: ~30 MB of packed 100-item lists
_U32 = np.dtype("<u4")
_KEY_DTYPES = {"user": np.dtype(">u8"), "product": np.dtype(">u4")}


@dataclass(frozen=True)
class Records:
    """Keys and values of one database, sorted by key, no key twice."""
    keys: list[bytes]
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.keys)


def numeric_subject_keys(kind: str, subject_ids: pa.Array) -> np.ndarray | None:
    """The subjects' ids as int64 when ``kind`` has numeric keys and every id is a
    decimal in the key's range; None otherwise (the record path then decides)."""
    if kind not in _KEY_DTYPES or subject_ids.null_count:
        return None
    try:
        keys = pc.cast(subject_ids, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    limit = UINT32_MAX if kind == "product" else np.iinfo(np.int64).max
    if len(keys) and (keys.min() < 0 or keys.max() > limit):
        return None
    return keys


def ranked_list_records(kind: str, subject_ids: pa.Array, product_ids: pa.Array, scores: pa.Array,
                        slice_rows: int = SLICE_ROWS) -> Iterator[Records]:
    """Ranked-list records of one ``recs/<kind>/<algorithm>`` database, in key order."""
    keys = numeric_subject_keys(kind, subject_ids)
    if keys is None or not _vectorisable(product_ids, scores):
        yield from _ranked_lists_one_by_one(kind, subject_ids, product_ids, scores, slice_rows)
        return
    order = _last_of_each_key(keys)
    key_dtype = _KEY_DTYPES[kind]
    for start in range(0, len(order), slice_rows):
        rows = order[start:start + slice_rows]
        yield Records(_split(keys[rows].astype(key_dtype).tobytes(), key_dtype.itemsize),
                      _pack_lists(product_ids.take(rows), scores.take(rows)))


def product_records(product_ids: pa.Array, categories: pa.Array, prices: pa.Array, active: pa.Array,
                    slice_rows: int = SLICE_ROWS) -> Iterator[Records]:
    """``products`` database records, in product id order."""
    ids = product_ids.to_numpy(zero_copy_only=False).astype(np.int64)

    def pack(rows: np.ndarray) -> list[bytes]:
        return [pack_product(c, None if p is None or p != p else p, bool(a)) for c, p, a in
                zip(categories.take(rows).to_pylist(), prices.take(rows).to_pylist(), active.take(rows).to_pylist())]

    yield from _sorted_slices(ids, product_key, pack, slice_rows)


def user_records(user_ids: pa.Array, activity: pa.Array, profile_segments: pa.Array,
                 slice_rows: int = SLICE_ROWS) -> Iterator[Records]:
    """``users`` database records, in user id order."""
    ids = user_ids.to_numpy(zero_copy_only=False).astype(np.int64)

    def pack(rows: np.ndarray) -> list[bytes]:
        return [pack_user(a, s) for a, s in zip(activity.take(rows).to_pylist(),
                                                profile_segments.take(rows).to_pylist())]

    yield from _sorted_slices(ids, user_key, pack, slice_rows)


# --- internals ----------------------------------------------------------------

def _last_of_each_key(keys: np.ndarray) -> np.ndarray:
    """Row indices in key order, keeping the last row of a repeated key (as a second put would)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    return order[np.append(ordered[1:] != ordered[:-1], True)] if len(order) else order


def _sorted_slices(ids: np.ndarray, key_of: Callable[[int], bytes], pack: Callable[[np.ndarray], list[bytes]],
                   slice_rows: int) -> Iterator[Records]:
    order = _last_of_each_key(ids)
    for start in range(0, len(order), slice_rows):
        rows = order[start:start + slice_rows]
        yield Records([key_of(i) for i in ids[rows].tolist()], pack(rows))


def _split(blob: bytes, width: int) -> list[bytes]:
    return [blob[i:i + width] for i in range(0, len(blob), width)]


def _vectorisable(product_ids: pa.Array, scores: pa.Array) -> bool:
    if product_ids.null_count or scores.null_count:
        return False
    lengths = product_ids.value_lengths().to_numpy(zero_copy_only=False)
    if not np.array_equal(lengths, scores.value_lengths().to_numpy(zero_copy_only=False)):
        return False
    if len(lengths) and lengths.max() > MAX_ITEMS:
        return False
    ids, values = product_ids.flatten(), scores.flatten()
    if ids.null_count or values.null_count:
        return False
    return not len(ids) or (pc.min(ids).as_py() >= 0 and pc.max(ids).as_py() <= UINT32_MAX)


def _pack_lists(product_ids: pa.ListArray, scores: pa.ListArray) -> list[bytes]:
    """Ranked-list records (layout 2) of lists already checked by ``_vectorisable``.

    Lists of one length are packed together as rows of one structured array (header,
    scale, ids, scaled float16 scores), so the usual case, top-N for everyone, is a
    single block; other lengths each get a block of their own.
    """
    lengths = product_ids.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    ids = product_ids.flatten().to_numpy(zero_copy_only=False).astype(_U32)
    values = scores.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if len(lengths) and (lengths == lengths[0]).all():  # the usual case: no gather, one block
        width = int(lengths[0])
        return equal_length_lists(ids.reshape(-1, width), values.reshape(-1, width))
    starts = np.cumsum(lengths) - lengths
    records: list[bytes] = [b""] * len(lengths)
    for width in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == width)
        items = starts[rows, None] + np.arange(width)
        for row, record in zip(rows.tolist(), equal_length_lists(ids[items], values[items])):
            records[row] = record
    return records


def equal_length_lists(ids: np.ndarray, values: np.ndarray) -> list[bytes]:
    """Ranked-list records (layout 2) of lists of one length, packed as one block:
    ``ids`` (uint32) and ``values`` (float32) are (lists, length) arrays."""
    count, width = ids.shape
    finite = np.where(np.isfinite(values), np.abs(values), np.float32(0))
    scale = finite.max(axis=1, initial=np.float32(0))
    divisor = np.where(scale > 0, scale, np.float32(1))[:, None]
    block = np.empty(count, np.dtype([("head", "<u4"), ("scale", "<f4"), ("ids", "<u4", (width,)),
                                      ("quotients", "<f2", (width,))]))
    block["head"] = LIST_LAYOUT_VERSION | (width << 16)  # uint8 layout, uint8 flags 0, uint16 n
    block["scale"] = scale
    block["ids"] = ids
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and infinite scores pass through
        block["quotients"] = (values / divisor).astype(np.float16)  # float32 quotients, as pack_ranked_list
    return _split(block.tobytes(), block.itemsize)


def _ranked_lists_one_by_one(kind: str, subject_ids: pa.Array, product_ids: pa.Array, scores: pa.Array,
                             slice_rows: int) -> Iterator[Records]:
    records: dict[bytes, bytes] = {}
    for subject, ids, values in zip(subject_ids.to_pylist(), product_ids.to_pylist(), scores.to_pylist()):
        if ids is None or values is None:
            raise SnapshotFormatError(f"{kind} {subject!r}: product_ids or scores is null")
        records[subject_key(kind, subject)] = pack_ranked_list(ids[:MAX_ITEMS], values[:MAX_ITEMS])
    keys = sorted(records)
    for start in range(0, len(keys), slice_rows):
        chunk = keys[start:start + slice_rows]
        yield Records(chunk, [records[k] for k in chunk])
