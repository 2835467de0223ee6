"""Checking request parameters once, at the boundary: each parser returns a clean
value or aborts with 400 and a message a client can act on."""
from __future__ import annotations

from flask import abort

MAX_USER_ID = 2**63 - 1  # user keys are 8-byte unsigned, but ids come from int64 columns
MAX_PRODUCT_ID = 2**32 - 1  # product keys are 4-byte unsigned


def parse_user_id(text: str) -> int:
    return _bounded_int("user_id", text, 0, MAX_USER_ID)


def parse_product_id(text: str) -> int:
    return _bounded_int("product_id", text, 0, MAX_PRODUCT_ID)


def parse_k(text: str | None, default_k: int, max_k: int) -> int:
    return default_k if text is None else _bounded_int("k", text, 1, max_k)


def parse_algorithm(text: str | None, available: tuple[str, ...], kind: str) -> str | None:
    """The requested algorithm (None when not given); it must have lists for ``kind``."""
    if text is None:
        return None
    if text not in available:
        names = ", ".join(available) or "none"
        abort(400, f"algorithm {_quoted(text)} has no {kind} lists in this snapshot; available: {names}")
    return text


def _bounded_int(name: str, text: str, low: int, high: int) -> int:
    # isascii + isdigit: int() would also take "+5", " 5", "5_0" and non-ASCII digits;
    # the length check keeps int() from parsing thousands of digits.
    if (not (text.isascii() and text.isdigit()) or len(text) > len(str(high)) + 1
            or not low <= int(text) <= high):
        abort(400, f"{name} must be an integer in [{low}, {high}], got {_quoted(text)}")
    return int(text)


def _quoted(text: str, limit: int = 40) -> str:
    """The client's value, cut short so an error message stays small."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
