"""The snapshot catalogue's ids, categories and inactive products, held in memory.

Built with one cursor pass over the ``products`` database when a snapshot is opened,
so a request looks categories up with a binary search instead of an LMDB read per
product (five to fifteen per request, each a B-tree descent into a page the worker
may not have touched yet). Eight bytes per product: 0.8 MB at 100k products.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Iterable, Sequence

from schemas.snapshot import PRODUCT_HEADER_SIZE


class CatalogIndex:
    """Product ids (ascending, as LMDB's big-endian keys sort) with their category codes."""

    def __init__(self, records: Iterable[tuple[bytes, bytes]]):
        """``records``: the products database's ``(key, value)`` pairs in key order."""
        self._ids = array("I")
        self._codes = array("I")
        self.categories: list[str] = []  # by code
        code_of: dict[bytes, int] = {}
        inactive = []
        for key, value in records:
            product_id = int.from_bytes(key, "big")
            raw = bytes(value[PRODUCT_HEADER_SIZE:])
            code = code_of.get(raw)
            if code is None:
                code = code_of[raw] = len(self.categories)
                self.categories.append(raw.decode("utf-8"))
            self._ids.append(product_id)
            self._codes.append(code)
            if not value[1] & 1:  # the product record's flags byte: bit 0 = active
                inactive.append(product_id)
        self.inactive = frozenset(inactive)

    def __len__(self) -> int:
        return len(self._ids)

    def _position(self, product_id: int) -> int:
        """The index of ``product_id`` in the catalogue, or -1."""
        ids = self._ids
        at = bisect_left(ids, product_id)
        return at if at < len(ids) and ids[at] == product_id else -1

    def __contains__(self, product_id: int) -> bool:
        return self._position(product_id) >= 0

    def category_names(self, product_ids: Sequence[int]) -> set[str]:
        """The categories of those of ``product_ids`` the catalogue has (empty ones left out)."""
        found = set()
        for product_id in product_ids:
            at = self._position(product_id)
            if at >= 0:
                found.add(self.categories[self._codes[at]])
        found.discard("")
        return found
