"""Two hand-made taste groups, with ids at the edges of their ranges, for the collaborative
algorithms' tests (ALS, EASE).

Group A: users U+1..U+10 and products P+100..P+109; group B: users U+11..U+20 and
products P+200..P+209, where U = 2^62 (user ids beyond int32 and int53) and
P = 2^32 - 1000 (product ids above 2^31, below the uint32 bound). User number i
(0..9 within its group) never touches products i, i+1, i+2 (mod 10) of its group,
only views product i+3, and views then buys the other six.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

AS_OF = datetime(2026, 10, 1, tzinfo=timezone.utc)
U = 2**62
P = 2**32 - 1000


def group_of_user(user_id: int) -> str:
    return "A" if user_id - U <= 10 else "B"


def group_of_product(product_id: int) -> str:
    return "A" if product_id - P < 200 else "B"


def _taste_rows():
    rows, bought, viewed_only = [], set(), {}
    for user in range(1, 21):
        i, first = (user - 1) % 10, (100 if user <= 10 else 200)
        items = [first + (i + j) % 10 for j in range(10)]
        viewed_only[U + user] = P + items[3]
        rows.append((U + user, P + items[3], "view", AS_OF - timedelta(days=2)))
        for day, item in enumerate(items[4:]):
            rows.append((U + user, P + item, "view", AS_OF - timedelta(days=day + 3)))
            rows.append((U + user, P + item, "purchase", AS_OF - timedelta(days=day + 1)))
            bought.add((U + user, P + item))
    return rows, bought, viewed_only


ROWS, BOUGHT, VIEWED_ONLY = _taste_rows()

ALL_PRODUCTS = {P + first + j for first in (100, 200) for j in range(10)}
SCHEMA = "user_id long, product_id long, event_type string, timestamp timestamp"
