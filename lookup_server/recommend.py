"""Which precomputed list answers a request, and the fallback chain when there is none.

Pure functions of a ``SnapshotReader``: no Flask here, so the chain is testable alone.
Unknown ids are not errors: every request gets an answer from some list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lookup_server.snapshot_reader import SnapshotReader, UserLookup

POPULAR = "popular"  # the algorithm whose global and category lists back every fallback
POPULAR_FALLBACK = "popular_fallback"  # the "algorithm" reported when a fallback answered

# Values of the "fallback" field: why the preferred lists did not answer.
PROFILE_SEGMENT = "profile_segment"  # a user without lists, answered from their profile segment's list
UNKNOWN_USER = "unknown_user"
UNKNOWN_PRODUCT = "unknown_product"
CATEGORY_POPULAR = "category_popular"
GLOBAL_POPULAR = "global_popular"  # a known product whose category has no popular list
FALLBACKS = (PROFILE_SEGMENT, UNKNOWN_USER, UNKNOWN_PRODUCT, CATEGORY_POPULAR, GLOBAL_POPULAR)


@dataclass(frozen=True)
class Recommendation:
    product_ids: tuple[int, ...]
    scores: tuple[float, ...]
    algorithm: str
    fallback: str | None


def recommend_for_user(reader: SnapshotReader, user_id: int, k: int, algorithms: Sequence[str],
                       known: UserLookup | None = None) -> Recommendation:
    """The first of ``algorithms`` with a list for this user; else the popular list of
    the user's profile segment, when the snapshot knows both; else the global popular list.

    ``known``, the reader's ``user_lookup`` of this user when the caller has it, saves
    looking for lists the user does not have and reading the user's record again."""
    for algorithm in algorithms:
        if known is not None and algorithm not in known.algorithms:
            continue
        found = reader.user_list(algorithm, user_id, k, active_only=True)
        if found is not None:
            return Recommendation(*found, algorithm=algorithm, fallback=None)
    user = reader.user(user_id) if known is None else known.record
    if user is not None and user.profile_segment is not None:
        found = reader.segment_list(POPULAR, user.profile_segment, k, active_only=True)
        if found is not None:
            return Recommendation(*found, algorithm=POPULAR_FALLBACK, fallback=PROFILE_SEGMENT)
    return _global_popular(reader, k, UNKNOWN_USER, frozenset())


def similar_products(reader: SnapshotReader, product_id: int, k: int,
                     algorithms: Sequence[str]) -> Recommendation:
    """The first of ``algorithms`` with a list for this product; else its category's
    popular list when the catalogue knows it; else the global popular list.

    The product itself is never among the answers.
    """
    exclude = frozenset((product_id,))
    for algorithm in algorithms:
        found = reader.product_list(algorithm, product_id, k, active_only=True, exclude=exclude)
        if found is not None:
            return Recommendation(*found, algorithm=algorithm, fallback=None)
    product = reader.product(product_id)
    if product is None:
        return _global_popular(reader, k, UNKNOWN_PRODUCT, exclude)
    found = reader.category_list(POPULAR, product.category, k, active_only=True, exclude=exclude)
    if found is not None:
        return Recommendation(*found, algorithm=POPULAR_FALLBACK, fallback=CATEGORY_POPULAR)
    return _global_popular(reader, k, GLOBAL_POPULAR, exclude)


def _global_popular(reader: SnapshotReader, k: int, fallback: str,
                    exclude: frozenset[int]) -> Recommendation:
    # A snapshot without a global popular list still answers, with no items.
    found = reader.global_list(POPULAR, k, active_only=True, exclude=exclude) or ((), ())
    return Recommendation(*found, algorithm=POPULAR_FALLBACK, fallback=fallback)
