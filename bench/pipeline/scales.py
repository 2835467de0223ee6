"""Scales of the pipeline benchmark: events, and users and products in proportion.

Issue 6's point is 10M events, 1M users and 100k products: 10 events per user and
100 events per product. Every other scale keeps those two ratios, so only the
volume changes between points (1M events: 100k users, 10k products; 3M: 300k,
30k), and a growth exponent fitted over the points is one of volume alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

EVENTS_PER_USER = 10
EVENTS_PER_PRODUCT = 100
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}


@dataclass(frozen=True)
class Scale:
    name: str
    events: int
    users: int
    products: int

    @classmethod
    def of(cls, text: str) -> "Scale":
        """``"3M"`` -> 3M events, 300k users, 30k products (``"250k"``, ``"50000"`` too)."""
        events = parse_count(text)
        return cls(name=label(events), events=events, users=max(events // EVENTS_PER_USER, 1),
                   products=max(events // EVENTS_PER_PRODUCT, 1))

    def as_dict(self) -> dict:
        return {"events": self.events, "users": self.users, "products": self.products}


def parse_count(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not match:
        raise ValueError(f"expected a count like 1M, 300k or 50000, got {text!r}")
    value = round(float(match.group(1)) * _SUFFIX[match.group(2).lower()])
    if value < 1:
        raise ValueError(f"a scale needs at least one event, got {text!r}")
    return value


def label(events: int) -> str:
    """The short name of an event count: 10000000 -> '10M', 300000 -> '300k'."""
    for suffix, unit in (("M", 1_000_000), ("k", 1_000)):
        if events >= unit and events % (unit // 10) == 0:
            return f"{events / unit:g}{suffix}"
    return str(events)
