"""Deterministic synthetic events, catalog and profiles, written into the landing zone.

No Spark here: numpy draws, pyarrow formats and writes. Runs as
``python -m jobs.generate_data`` or ``spark-submit jobs/generate_data.py``.

What the data looks like:

* ~``products/50`` categories (at least 5) named ``department.subcategory`` under
  eight departments; each category has its own Zipf popularity, and products
  have Zipf popularity within their category.
* Latent tastes: every product has one of ``tastes`` styles (shared by all
  categories: a style sets the product's price tier and mostly its brand), and
  every user a taste of their own, correlated with their age band. Most of a
  user's views fall on products of their taste, so what they like in one
  category says what they will like in another: the signal personalised models
  find and global popularity cannot. Some users' taste drifts once during the
  window, so recent behaviour says more than old.
* Products are added over time: most before the window, some during it, and no
  event ever touches a product before its ``added_at`` (also written into
  ``other_features``). Product ids grow with ``added_at``.
* Each user has 1-3 preferred categories (drawn by category popularity) and a
  power-law activity level. Events come in sessions: a session picks a category,
  mostly from the user's preferences, and views several products seconds to
  minutes apart.
* Funnel: ~10 % of views lead to add_to_cart shortly after the view, ~30 % of
  carts to a purchase at the session's checkout; a few clicks (just before a
  view), wishlists and remove_from_carts. So a cart or purchase always follows a
  view of the same product in the same session.
* Events are cut into chunks (one file each) covering consecutive slices of the
  window, so the files arrive in time order, like a real landing zone.

Every draw comes from a generator seeded by ``(seed, part[, chunk])``: the same
arguments give byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if __package__ in (None, ""):  # run as a script: spark-submit jobs/generate_data.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas import EVENT_TYPES, EVENTS, PRODUCTS, PROFILES, Table, arrow_schema  # noqa: E402

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet")
DEFAULT_CHUNK_EVENTS = 1_000_000
DAY = 86_400

VIEW, CLICK, ADD_TO_CART, REMOVE_FROM_CART, WISHLIST, PURCHASE = (
    EVENT_TYPES.index(name)
    for name in ("view", "click", "add_to_cart", "remove_from_cart", "wishlist", "purchase")
)


@dataclass(frozen=True)
class Department:
    name: str
    subcategories: tuple[str, ...]
    base_price: float
    brands: tuple[str, ...]
    has_color: bool = True


DEPARTMENTS = (
    Department("electronics", ("phone", "laptop", "headphones", "tablet", "camera", "tv", "smartwatch",
                               "speaker", "monitor", "console"), 300.0,
               ("voltix", "nexa", "orbitron", "kivo", "lumenta", "quanta")),
    Department("fashion", ("shoes", "dress", "jeans", "jacket", "tshirt", "bag", "watch", "sunglasses"), 45.0,
               ("urbana", "velour", "northwind", "kestrel", "mode9")),
    Department("home", ("sofa", "lamp", "bedding", "kitchenware", "rug", "chair", "table", "storage"), 80.0,
               ("hearthly", "nordlund", "casa_viva", "oakline")),
    Department("beauty", ("skincare", "makeup", "fragrance", "haircare", "nails", "shaving"), 20.0,
               ("lumiere", "petalia", "auraline", "dermis")),
    Department("sports", ("running", "cycling", "fitness", "camping", "swimming", "yoga", "football"), 55.0,
               ("stridex", "peakform", "trailhead", "aquaflo")),
    Department("books", ("fiction", "nonfiction", "children", "comics", "cookbooks", "textbooks"), 15.0,
               ("inkwell_press", "northpage", "papyrus_house"), has_color=False),
    Department("toys", ("construction", "dolls", "puzzles", "board_games", "outdoor", "plush"), 25.0,
               ("playfield", "tinkerbox", "wonderly")),
    Department("grocery", ("coffee", "tea", "snacks", "pasta", "spices", "beverages"), 8.0,
               ("greenbarn", "daily_harvest", "oro_fino"), has_color=False),
)
COLORS = ("black", "white", "silver", "grey", "blue", "red", "green", "beige", "pink", "gold")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_BAND_P = (0.16, 0.28, 0.22, 0.16, 0.11, 0.07)
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "ES", "IT", "CA", "NL", "PL")
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_P = (0.62, 0.31, 0.07)
# Relative session starts per UTC hour of day: quiet nights, an evening peak.
HOUR_WEIGHTS = np.array([0.30, 0.20, 0.15, 0.12, 0.12, 0.18, 0.35, 0.60, 0.80, 0.90, 0.95, 1.00,
                         1.05, 1.00, 0.95, 0.95, 1.00, 1.10, 1.30, 1.50, 1.60, 1.50, 1.10, 0.60])

# Sort key of products by (group, added_at): group * KEY_SCALE + epoch seconds.
_KEY_SCALE = 1 << 40


@dataclass(frozen=True)
class Behaviour:
    """The knobs of the simulation; the defaults give the shape described in the module docstring."""

    category_zipf: float = 1.0          # category popularity ~ 1 / rank ** category_zipf
    product_zipf: float = 1.1           # product popularity within its category
    p_new_product: float = 0.3          # share of products added during the window
    catalog_history_days: int = 730     # the others were added up to this long before it
    p_inactive: float = 0.03
    activity_alpha: float = 1.5         # user activity ~ Pareto(activity_alpha)
    p_preferred_category: float = 0.8   # a session's category comes from the user's preferences
    tastes: int = 4                     # latent styles (price tier, brands); fewer if the catalog is small
    p_own_taste: float = 0.75           # a view falls on a product of the user's taste
    p_taste_brand: float = 0.8          # a product's brand is its style's (else any of its department's)
    taste_price_step: float = 0.6       # log-price between neighbouring styles
    p_drift: float = 0.3                # users whose taste changes once, at a random time in the window
    p_stray_view: float = 0.15          # a view outside the session's category
    mean_views: float = 4.5             # views per session (geometric)
    median_gap_s: float = 25.0          # between two views of a session (log-normal)
    p_click: float = 0.05               # a click just before a view
    p_cart: float = 0.10                # add_to_cart after a view
    p_purchase: float = 0.30            # purchase at checkout, given a cart
    p_wishlist: float = 0.02            # wishlist after a view that was not carted
    p_remove: float = 0.15              # remove_from_cart, given a cart not purchased
    weekend_boost: float = 1.15
    p_profile: float = 0.9              # users with a profile row
    history_per_activity: float = 3.0   # profile view history length ~ Poisson(activity * this)
    max_history: float = 60.0
    p_history_purchase: float = 0.1


DEFAULT_BEHAVIOUR = Behaviour()


@dataclass(frozen=True)
class Catalog:
    """Products, rows sorted by (category, taste, added_at): the products of one
    (category, taste) group available at time t are one contiguous prefix of its rows."""

    product_id: np.ndarray        # int64, grows with added_at
    category: np.ndarray          # int64 index into category_names
    taste: np.ndarray             # int64 style, 0 .. tastes-1
    category_names: tuple[str, ...]
    category_cdf: np.ndarray      # cumulative category popularity, ends at 1
    tastes: int                   # styles per category
    added_at: np.ndarray          # int64 epoch seconds
    price: np.ndarray             # float64, 2 decimals
    active: np.ndarray            # bool
    brand: np.ndarray             # object (str)
    color: np.ndarray             # object (str or None)
    group_offsets: np.ndarray     # rows of group g = category * tastes + taste: offsets[g]:offsets[g+1]
    sort_key: np.ndarray          # group * _KEY_SCALE + added_at, non-decreasing
    cum_weight: np.ndarray        # [0, cumsum(within-category popularity)], len rows + 1

    def __len__(self) -> int:
        return len(self.product_id)


@dataclass(frozen=True)
class Users:
    user_id: np.ndarray           # int64, increasing
    activity: np.ndarray          # float64 >= 1, power-law
    activity_cdf: np.ndarray
    pref_categories: np.ndarray   # (n, 3) category indices
    pref_cdf: np.ndarray          # (n, 3) cumulative slot weights; unused slots add 0
    taste: np.ndarray             # int64 style until drift_at
    late_taste: np.ndarray        # int64 style from drift_at
    drift_at: np.ndarray          # int64 epoch seconds (past the window's end: no drift)
    age_band: np.ndarray
    country: np.ndarray
    device: np.ndarray
    signup_date: np.ndarray
    has_profile: np.ndarray       # bool

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(frozen=True)
class World:
    """Everything fixed before the first event: catalog, users, window and seed."""

    seed: int
    start_ts: int
    end_ts: int
    catalog: Catalog
    users: Users
    behaviour: Behaviour = field(default=DEFAULT_BEHAVIOUR)


# --- drawing helpers ---------------------------------------------------------

def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _draw(rng: np.random.Generator, cdf: np.ndarray, size) -> np.ndarray:
    """Indices drawn with the probabilities whose cumulative sum is ``cdf``."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def _cdf(weights) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def to_epoch(value: str | date | datetime) -> int:
    """Epoch seconds of a date (midnight UTC), a datetime (naive means UTC) or an ISO string."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp())


def iso_utc(epoch_seconds: np.ndarray) -> np.ndarray:
    """``2026-10-03T12:34:56Z`` strings (numpy unicode) for epoch seconds."""
    text = np.datetime_as_string(np.asarray(epoch_seconds, dtype="datetime64[s]"), unit="s")
    return np.char.add(text, "Z")


# --- the world ---------------------------------------------------------------

def category_names(n: int) -> tuple[list[str], np.ndarray]:
    """``n`` category paths, round-robin over the departments, and each one's department index."""
    names, depts = [], []
    for i in range(n):
        d = i % len(DEPARTMENTS)
        dept = DEPARTMENTS[d]
        j = i // len(DEPARTMENTS)
        sub = dept.subcategories[j % len(dept.subcategories)]
        line = j // len(dept.subcategories)
        names.append(f"{dept.name}.{sub}" if line == 0 else f"{dept.name}.{sub}.line{line}")
        depts.append(d)
    return names, np.array(depts, dtype=np.int64)


def build_catalog(n_products: int, seed: int, start_ts: int, end_ts: int,
                  behaviour: Behaviour = DEFAULT_BEHAVIOUR) -> Catalog:
    """The product catalog: categories, styles, popularity, prices, launch times."""
    if n_products < 1:
        raise ValueError("need at least one product")
    b = behaviour
    rng = _rng(seed, 0)
    n_cat = min(max(5, n_products // 50), n_products)
    tastes = max(1, min(b.tastes, n_products // n_cat))
    n_groups = n_cat * tastes
    names, dept_of_cat = category_names(n_cat)
    cat_weight = (rng.permutation(n_cat) + 1.0) ** -b.category_zipf
    category_cdf = _cdf(cat_weight)

    # One product per (category, style) first, launched before the window, so every
    # group has something to show at any time; bigger categories get more.
    category = np.empty(n_products, dtype=np.int64)
    taste = np.empty(n_products, dtype=np.int64)
    category[:n_groups], taste[:n_groups] = np.divmod(np.arange(n_groups), tastes)
    category[n_groups:] = _draw(rng, _cdf(np.sqrt(cat_weight)), n_products - n_groups)
    taste[n_groups:] = rng.integers(0, tastes, n_products - n_groups)
    new = rng.random(n_products) < b.p_new_product
    new[:n_groups] = False
    added_at = np.where(
        new,
        start_ts + rng.integers(0, end_ts - start_ts, n_products),
        start_ts - rng.integers(1, b.catalog_history_days * DAY + 1, n_products),
    )
    # Popularity: a random rank within the category, weight 1 / rank ** zipf.
    by_cat = np.lexsort((rng.random(n_products), category))
    first_of_cat = np.searchsorted(category[by_cat], np.arange(n_cat))
    rank = np.empty(n_products, dtype=np.int64)
    rank[by_cat] = np.arange(n_products) - first_of_cat[category[by_cat]]
    weight = (rank + 1.0) ** -b.product_zipf

    dept = dept_of_cat[category]
    base_price = np.array([d.base_price for d in DEPARTMENTS])[dept]
    tier = np.exp((taste - (tastes - 1) / 2) * b.taste_price_step)  # budget ... premium
    price = np.maximum(np.round(base_price * tier * rng.lognormal(0.0, 0.35, n_products), 2), 0.5)
    active = rng.random(n_products) >= b.p_inactive
    own_brand = rng.random(n_products) < b.p_taste_brand
    brand_pick = rng.random(n_products)
    color_pick = rng.integers(0, len(COLORS), n_products)
    brand = np.empty(n_products, dtype=object)
    color = np.empty(n_products, dtype=object)
    for d, department in enumerate(DEPARTMENTS):
        rows = dept == d
        n_brands = len(department.brands)
        style_brand = taste[rows] * n_brands // tastes
        any_brand = (brand_pick[rows] * n_brands).astype(np.int64)
        brand[rows] = np.array(department.brands, dtype=object)[np.where(own_brand[rows], style_brand, any_brand)]
        if department.has_color:
            color[rows] = np.array(COLORS, dtype=object)[color_pick[rows]]
    id_steps = rng.integers(1, 20, n_products)

    group = category * tastes + taste
    rows = np.lexsort((added_at, group))
    category, taste, group, added_at, weight = category[rows], taste[rows], group[rows], added_at[rows], weight[rows]
    price, active, brand, color = price[rows], active[rows], brand[rows], color[rows]
    # Ids in launch order: a later product has a larger id, with gaps.
    product_id = np.empty(n_products, dtype=np.int64)
    product_id[np.argsort(added_at, kind="stable")] = 10_000 + np.cumsum(id_steps)
    return Catalog(
        product_id=product_id, category=category, taste=taste, category_names=tuple(names),
        category_cdf=category_cdf, tastes=tastes, added_at=added_at, price=price, active=active,
        brand=brand, color=color,
        group_offsets=np.searchsorted(group, np.arange(n_groups + 1)),
        sort_key=group * _KEY_SCALE + added_at,
        cum_weight=np.concatenate([[0.0], np.cumsum(weight)]),
    )


def sample_products(catalog: Catalog, rng: np.random.Generator, groups: np.ndarray,
                    times: np.ndarray) -> np.ndarray:
    """Catalog rows drawn by popularity within ``groups`` (category * tastes + taste),
    among products added by ``times``."""
    lo = catalog.group_offsets[groups]
    hi = np.searchsorted(catalog.sort_key, groups * _KEY_SCALE + times, side="right")
    hi = np.maximum(hi, lo + 1)  # each group's first product predates the window
    base = catalog.cum_weight[lo]
    target = base + rng.random(len(groups)) * (catalog.cum_weight[hi] - base)
    rows = np.searchsorted(catalog.cum_weight, target, side="right") - 1
    return np.clip(rows, lo, hi - 1)


def build_users(n_users: int, seed: int, catalog: Catalog, start_ts: int, end_ts: int,
                behaviour: Behaviour = DEFAULT_BEHAVIOUR) -> Users:
    """Users: ids, power-law activity, preferred categories, taste and profile features."""
    if n_users < 1:
        raise ValueError("need at least one user")
    b = behaviour
    rng = _rng(seed, 1)
    user_id = np.cumsum(rng.integers(1, 4, n_users))
    activity = rng.pareto(b.activity_alpha, n_users) + 1.0
    n_pref = rng.integers(1, 4, n_users)
    pref_categories = _draw(rng, catalog.category_cdf, (n_users, 3))
    slot_weight = np.array([0.6, 0.3, 0.1]) * (np.arange(3) < n_pref[:, None])
    pref_cdf = np.cumsum(slot_weight, axis=1) / slot_weight.sum(axis=1, keepdims=True)
    signup = start_ts - rng.integers(1, 1500, n_users) * DAY
    age = _draw(rng, _cdf(AGE_BAND_P), n_users)
    country = _draw(rng, _cdf(1.0 / np.arange(1, len(COUNTRIES) + 1)), n_users)
    device = _draw(rng, _cdf(DEVICE_P), n_users)
    has_profile = rng.random(n_users) < b.p_profile
    # Taste follows age: the youngest band leans to the first style, the oldest to the last.
    taste = np.clip(np.rint(age / (len(AGE_BANDS) - 1) * (catalog.tastes - 1)
                            + rng.normal(0.0, 0.6, n_users)), 0, catalog.tastes - 1).astype(np.int64)
    late_taste = (taste + rng.integers(1, max(catalog.tastes, 2), n_users)) % catalog.tastes
    drifts = rng.random(n_users) < b.p_drift
    drift_at = np.where(drifts, rng.integers(start_ts, max(end_ts, start_ts + 1), n_users), np.iinfo(np.int64).max)
    return Users(
        user_id=user_id, activity=activity, activity_cdf=_cdf(activity),
        pref_categories=pref_categories, pref_cdf=pref_cdf,
        taste=taste, late_taste=late_taste, drift_at=drift_at,
        age_band=np.array(AGE_BANDS, dtype=object)[age],
        country=np.array(COUNTRIES, dtype=object)[country],
        device=np.array(DEVICES, dtype=object)[device],
        signup_date=np.datetime_as_string(signup.astype("datetime64[s]"), unit="D").astype(object),
        has_profile=has_profile,
    )


def build_world(users: int, products: int, seed: int, start: str | date | datetime = "2026-10-01",
                days: int = 30, behaviour: Behaviour = DEFAULT_BEHAVIOUR) -> World:
    """Catalog and users for a window of ``days`` days from ``start`` (UTC)."""
    if days < 1:
        raise ValueError("the window must last at least one day")
    start_ts = to_epoch(start)
    end_ts = start_ts + days * DAY
    catalog = build_catalog(products, seed, start_ts, end_ts, behaviour)
    return World(seed=seed, start_ts=start_ts, end_ts=end_ts, catalog=catalog,
                 users=build_users(users, seed, catalog, start_ts, end_ts, behaviour), behaviour=behaviour)


def _categories_for(rng: np.random.Generator, world: World, user_rows: np.ndarray) -> np.ndarray:
    """A category per entry: mostly one of the user's preferred ones, else by global popularity."""
    users, n = world.users, len(user_rows)
    slot = np.minimum((rng.random(n)[:, None] >= users.pref_cdf[user_rows]).sum(axis=1), 2)
    preferred = users.pref_categories[user_rows, slot]
    anywhere = _draw(rng, world.catalog.category_cdf, n)
    return np.where(rng.random(n) < world.behaviour.p_preferred_category, preferred, anywhere)


def _groups_for(rng: np.random.Generator, world: World, user_rows: np.ndarray, categories: np.ndarray,
                times: np.ndarray) -> np.ndarray:
    """The (category, taste) group per entry: mostly the user's taste at ``times``, else any."""
    users, tastes, n = world.users, world.catalog.tastes, len(user_rows)
    own = np.where(times >= users.drift_at[user_rows], users.late_taste[user_rows], users.taste[user_rows])
    taste = np.where(rng.random(n) < world.behaviour.p_own_taste, own, rng.integers(0, tastes, n))
    return categories * tastes + taste


# --- events ------------------------------------------------------------------

def _session_starts(rng: np.random.Generator, n: int, t0: int, t1: int, b: Behaviour) -> np.ndarray:
    """Session start times in [t0, t1), following the hour-of-day and weekend pattern."""
    hours = np.arange(t0 // 3600, (t1 - 1) // 3600 + 1)
    lo = np.maximum(hours * 3600, t0)
    width = np.minimum((hours + 1) * 3600, t1) - lo
    weekday = (hours // 24 + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Saturday, Sunday
    weight = HOUR_WEIGHTS[hours % 24] * np.where(weekday >= 5, b.weekend_boost, 1.0) * width
    bins = _draw(rng, _cdf(weight), n)
    return lo[bins] + (rng.random(n) * width[bins]).astype(np.int64)


def _session_skeletons(rng: np.random.Generator, n_events: int, b: Behaviour):
    """Views per session and per-view funnel flags, for enough sessions to hold ``n_events``."""
    per_session = b.mean_views * (
        1 + b.p_click + b.p_cart + (1 - b.p_cart) * b.p_wishlist
        + b.p_cart * b.p_purchase + b.p_cart * (1 - b.p_purchase) * b.p_remove)
    parts: list[dict[str, np.ndarray]] = []
    total = 0
    while total < n_events:
        n_sessions = int((n_events - total) / per_session * 1.05) + 8
        views = rng.geometric(1.0 / b.mean_views, n_sessions)
        n_views = int(views.sum())
        cart = rng.random(n_views) < b.p_cart
        purchase = cart & (rng.random(n_views) < b.p_purchase)
        part = {
            "views": views,
            "click": rng.random(n_views) < b.p_click,
            "cart": cart,
            "wishlist": ~cart & (rng.random(n_views) < b.p_wishlist),
            "purchase": purchase,
            "remove": cart & ~purchase & (rng.random(n_views) < b.p_remove),
        }
        total += n_views + sum(int(part[k].sum()) for k in ("click", "cart", "wishlist", "purchase", "remove"))
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def generate_event_chunk(world: World, n_events: int, t0: int, t1: int,
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Exactly ``n_events`` events in [t0, t1), sorted by timestamp.

    Returns numpy columns ``session`` (chunk-local id), ``user_id``, ``event_type``
    (index into EVENT_TYPES), ``product_id`` and ``timestamp`` (epoch seconds).
    """
    if n_events <= 0:
        return {k: np.empty(0, dtype=np.int64) for k in ("session", "user_id", "event_type",
                                                          "product_id", "timestamp")}
    b = world.behaviour
    t1 = max(t1, t0 + 1)
    sk = _session_skeletons(rng, n_events, b)
    views = sk["views"]
    n_views = len(sk["click"])
    view_session = np.repeat(np.arange(len(views)), views)
    view_pos = np.arange(n_views) - (np.cumsum(views) - views)[view_session]

    # Events in logical order within a session: for each view [click] view
    # [cart | wishlist]; then the session's remove_from_carts, then its purchases.
    kinds = (  # (views it applies to, event type, phase, position within the view's group)
        (sk["click"], CLICK, 0, 0), (None, VIEW, 0, 1), (sk["cart"], ADD_TO_CART, 0, 2),
        (sk["wishlist"], WISHLIST, 0, 2), (sk["remove"], REMOVE_FROM_CART, 1, 0),
        (sk["purchase"], PURCHASE, 2, 0),
    )
    ev_view, ev_type, ev_order = [], [], []
    width = 3 * int(views.max())
    for mask, kind, phase, sub in kinds:
        idx = np.arange(n_views) if mask is None else np.flatnonzero(mask)
        ev_view.append(idx)
        ev_type.append(np.full(len(idx), kind, dtype=np.int8))
        ev_order.append((view_session[idx] * 3 + phase) * width + view_pos[idx] * 3 + sub)
    order = np.argsort(np.concatenate(ev_order), kind="stable")[:n_events]  # cut inside the last session
    ev_view = np.concatenate(ev_view)[order]
    ev_type = np.concatenate(ev_type)[order]
    ev_session = view_session[ev_view]

    # Seconds before each event; strictly positive, so timestamps within a
    # session are distinct and follow the logical order.
    n = n_events
    first = np.ones(n, dtype=bool)
    first[1:] = ev_session[1:] != ev_session[:-1]
    prev_type = np.concatenate([[-1], ev_type[:-1]])
    browse = np.clip(np.rint(rng.lognormal(math.log(b.median_gap_s), 0.9, n)), 2, 900).astype(np.int64)
    gap = np.select(
        [first,
         (ev_type == VIEW) & (prev_type == CLICK),
         (ev_type == ADD_TO_CART) | (ev_type == WISHLIST),
         ev_type == REMOVE_FROM_CART,
         (ev_type == PURCHASE) & (prev_type == PURCHASE),
         ev_type == PURCHASE],
        [0, rng.integers(1, 4, n), rng.integers(3, 61, n), rng.integers(5, 61, n), 1,
         rng.integers(20, 181, n)],
        default=browse,
    )
    elapsed = np.cumsum(gap)
    session_first = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    offset = elapsed - elapsed[session_first]

    n_sessions = int(ev_session[-1]) + 1
    last = np.ones(n, dtype=bool)
    last[:-1] = first[1:]
    span = np.zeros(n_sessions, dtype=np.int64)
    span[ev_session[last]] = offset[last]
    start = _session_starts(rng, n_sessions, t0, t1, b)
    start = np.maximum(np.minimum(start, t1 - 1 - span), t0)  # sessions end inside the slice
    timestamp = start[ev_session] + offset

    user_rows = _draw(rng, world.users.activity_cdf, n_sessions)
    session_category = _categories_for(rng, world, user_rows)
    n_views = int(np.searchsorted(view_session, n_sessions))  # views of kept sessions
    view_session = view_session[:n_views]
    stray = rng.random(n_views) < b.p_stray_view
    view_category = np.where(stray, _draw(rng, world.catalog.category_cdf, n_views),
                             session_category[view_session])
    # A view's product must exist at the first event of its group (click or view).
    first_seen = np.full(n_views, t1, dtype=np.int64)
    np.minimum.at(first_seen, ev_view, timestamp)
    view_group = _groups_for(rng, world, user_rows[view_session], view_category, first_seen)
    view_product = sample_products(world.catalog, rng, view_group, first_seen)

    by_time = np.argsort(timestamp, kind="stable")
    return {
        "session": ev_session[by_time],
        "user_id": world.users.user_id[user_rows[ev_session]][by_time],
        "event_type": ev_type[by_time],
        "product_id": world.catalog.product_id[view_product[ev_view]][by_time],
        "timestamp": timestamp[by_time],
    }


def chunk_plan(n_events: int, chunk_size: int, start_ts: int, end_ts: int) -> list[tuple[int, int, int]]:
    """(events, t0, t1) per chunk: slices of the window proportional to their event counts."""
    if chunk_size < 1:
        raise ValueError("chunk size must be positive")
    plan, done, window = [], 0, end_ts - start_ts
    while done < n_events:
        size = min(chunk_size, n_events - done)
        t0 = start_ts + window * done // n_events
        t1 = start_ts + window * (done + size) // n_events
        plan.append((size, t0, t1))
        done += size
    return plan


def event_chunks(world: World, n_events: int, chunk_size: int = DEFAULT_CHUNK_EVENTS
                 ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(chunk number, columns) for each chunk, in time order; chunk k draws from (seed, 3, k)."""
    for k, (size, t0, t1) in enumerate(chunk_plan(n_events, chunk_size, world.start_ts, world.end_ts)):
        yield k, generate_event_chunk(world, size, t0, t1, _rng(world.seed, 3, k))


# --- landing tables ----------------------------------------------------------

def landing_schema(table: Table) -> pa.Schema:
    """The Arrow schema of a landing file: the table's, with timestamps kept as ISO strings."""
    schema = arrow_schema(table)
    return pa.schema([pa.field(f.name, pa.string(), nullable=f.nullable) if pa.types.is_timestamp(f.type)
                      else f for f in schema])


def _string_map(columns: dict[str, np.ndarray]) -> pa.MapArray:
    """A map<string,string> per row from equal-length columns; None leaves the key out."""
    n = len(next(iter(columns.values())))
    values = np.empty((n, len(columns)), dtype=object)
    for i, column in enumerate(columns.values()):
        values[:, i] = column
    keys = np.broadcast_to(np.array(list(columns), dtype=object), values.shape)
    present = np.not_equal(values, None)
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys[present], pa.string()),
                                   pa.array(values[present], pa.string()))


def _id_lists(owner: np.ndarray, ids: np.ndarray, n_owners: int) -> pa.ListArray:
    """Sorted, de-duplicated lists of ``ids`` per owner 0..n_owners-1."""
    pairs = np.unique(owner.astype(np.int64) << 32 | ids.astype(np.int64))
    counts = np.bincount(pairs >> 32, minlength=n_owners)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(pairs & 0xFFFFFFFF, pa.int64()))


def events_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """Landing rows of EVENTS from ``generate_event_chunk`` columns."""
    return pa.Table.from_arrays([
        pa.array(columns["user_id"], pa.int64()),
        pc.take(pa.array(EVENT_TYPES, pa.string()), pa.array(columns["event_type"], pa.int8())),
        pa.array(columns["product_id"], pa.int64()),
        pa.array(iso_utc(columns["timestamp"]), pa.string()),
    ], schema=landing_schema(EVENTS))


def products_table(catalog: Catalog) -> pa.Table:
    """Landing rows of PRODUCTS, by product id; ``added_at`` is in other_features."""
    rows = np.argsort(catalog.product_id)
    return pa.Table.from_arrays([
        pa.array(catalog.product_id[rows], pa.int64()),
        pa.array(np.array(catalog.category_names, dtype=object)[catalog.category[rows]], pa.string()),
        pa.array(catalog.price[rows], pa.float64()),
        pa.array(catalog.active[rows], pa.bool_()),
        _string_map({"brand": catalog.brand[rows], "color": catalog.color[rows],
                     "added_at": iso_utc(catalog.added_at[rows]).astype(object)}),
        pa.nulls(len(rows), pa.string()),  # changed_at: a catalog file applies in file order
    ], schema=landing_schema(PRODUCTS))


def profiles_table(world: World) -> pa.Table:
    """Landing rows of PROFILES for the users that have one: histories from before the window."""
    b, users, catalog = world.behaviour, world.users, world.catalog
    rng = _rng(world.seed, 2)
    rows = np.flatnonzero(users.has_profile)
    n_items = rng.poisson(np.minimum(users.activity[rows] * b.history_per_activity, b.max_history))
    owner = np.repeat(np.arange(len(rows)), n_items)
    before = np.full(len(owner), world.start_ts - 1)
    groups = _groups_for(rng, world, rows[owner], _categories_for(rng, world, rows[owner]), before)
    seen = catalog.product_id[sample_products(catalog, rng, groups, before)]
    bought = rng.random(len(owner)) < b.p_history_purchase
    return pa.Table.from_arrays([
        pa.array(users.user_id[rows], pa.int64()),
        _id_lists(owner[bought], seen[bought], len(rows)),
        _id_lists(owner, seen, len(rows)),
        _string_map({"age_band": users.age_band[rows], "country": users.country[rows],
                     "device": users.device[rows], "signup_date": users.signup_date[rows]}),
    ], schema=landing_schema(PROFILES))


# --- file formats ------------------------------------------------------------

def _fresh(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array with offset 0 (map/list child arrays ignore slicing)."""
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    return pa.concat_arrays(chunks) if chunks else pa.array([], array.type)


def _check_plain(strings: pa.Array) -> None:
    if pc.any(pc.match_substring_regex(strings, r'["\\\x00-\x1f]')).as_py():
        raise ValueError("a generated string needs JSON escaping")


def json_text(array: pa.Array | pa.ChunkedArray, nulls: str | None = "null") -> pa.Array:
    """Each value as JSON text, computed column-wise (no Python loop over rows)."""
    array = _fresh(array)
    t = array.type
    join = pc.binary_join_element_wise
    if pa.types.is_integer(t):
        out = pc.cast(array, pa.string())
    elif pa.types.is_floating(t):
        text = pc.cast(array, pa.string())
        out = pc.if_else(pc.match_substring_regex(text, "[.eE]"), text, join(text, ".0", ""))
    elif pa.types.is_boolean(t):
        out = pc.if_else(array, "true", "false")
    elif pa.types.is_string(t):
        _check_plain(array)
        out = join('"', array, '"', "")
    elif pa.types.is_list(t):
        out = join("[", pc.binary_join(pc.cast(array, pa.list_(pa.string())), ","), "]", "")
    elif pa.types.is_map(t):
        _check_plain(array.keys)
        _check_plain(array.items)
        pairs = join('"', array.keys, '":"', array.items, '"', "")
        out = join("{", pc.binary_join(pa.ListArray.from_arrays(array.offsets, pairs), ","), "}", "")
    else:
        raise TypeError(f"no JSON text for {t}")
    return out if nulls is None else pc.fill_null(out, nulls)


def jsonl_buffer(table: pa.Table) -> pa.Buffer:
    """The table as JSON lines (UTF-8): one object per row, keys in schema order."""
    if table.num_rows == 0:
        return pa.py_buffer(b"")
    pieces: list = []
    for i, name in enumerate(table.column_names):
        pieces += [("{" if i == 0 else ",") + json.dumps(name) + ":", json_text(table.column(name))]
    lines = _fresh(pc.binary_join_element_wise(*pieces, "}\n", ""))
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1)
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def csv_table(table: pa.Table) -> pa.Table:
    """The table with list and map columns JSON-encoded into strings (CSV has no nesting)."""
    columns = [json_text(col, nulls=None) if pa.types.is_list(col.type) or pa.types.is_map(col.type)
               else col for col in table.columns]
    return pa.table(columns, names=table.column_names)


def write_table(table: pa.Table, path: Path, fmt: str) -> None:
    """Write under a hidden name in the same folder, then rename into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if fmt == "jsonl":
            with open(tmp, "wb") as fh:
                fh.write(jsonl_buffer(table))
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(csv_table(table), tmp, pacsv.WriteOptions(quoting_style="needed"))
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_chunked(table: pa.Table, folder: Path, name: str, seed: int, fmt: str, rows_per_file: int,
                   ) -> list[Path]:
    paths = []
    for k, first in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        part = table.slice(first, rows_per_file)
        path = folder / f"{name}-s{seed}-{k:05d}.{fmt}"
        write_table(pa.table([_fresh(c) for c in part.columns], schema=table.schema), path, fmt)
        paths.append(path)
    return paths


# --- the job -----------------------------------------------------------------

def generate(out_dir: str | Path, users: int = 2000, products: int = 500, events: int = 50_000,
             seed: int = 42, start: str | date | datetime = "2026-10-01", days: int = 30,
             fmt: str = "jsonl", chunk_size: int = DEFAULT_CHUNK_EVENTS) -> dict:
    """Write products, profiles, then events (one file per chunk) under ``out_dir``; return counts."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if events < 0:
        raise ValueError("events must be >= 0")
    out = Path(out_dir)
    folders = {name: out / name for name in ("events", "products", "profiles")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    world = build_world(users, products, seed, start, days)

    # Catalog and profiles land first, so a streaming ingest knows the products
    # before their events arrive.
    products_tbl = products_table(world.catalog)
    files = _write_chunked(products_tbl, folders["products"], "products", seed, fmt, chunk_size)
    profiles_tbl = profiles_table(world)
    files += _write_chunked(profiles_tbl, folders["profiles"], "profiles", seed, fmt, chunk_size)
    log.info("wrote %d products in %d categories and %d profiles", products_tbl.num_rows,
             len(world.catalog.category_names), profiles_tbl.num_rows)

    type_counts: Counter[str] = Counter()
    for k, columns in event_chunks(world, events, chunk_size):
        path = folders["events"] / f"events-s{seed}-{k:05d}.{fmt}"
        write_table(events_table(columns), path, fmt)
        files.append(path)
        counts = np.bincount(columns["event_type"], minlength=len(EVENT_TYPES))
        type_counts.update({t: int(c) for t, c in zip(EVENT_TYPES, counts) if c})
        log.info("chunk %d: %d events %s .. %s -> %s", k, len(columns["timestamp"]),
                 iso_utc(columns["timestamp"][:1])[0], iso_utc(columns["timestamp"][-1:])[0], path.name)
    return {
        "events": sum(type_counts.values()),
        "event_types": dict(sorted(type_counts.items())),
        "products": products_tbl.num_rows,
        "categories": len(world.catalog.category_names),
        "profiles": profiles_tbl.num_rows,
        "users": len(world.users),
        "files": len(files),
        "window": [str(iso_utc([world.start_ts])[0]), str(iso_utc([world.end_ts])[0])],
        "seconds": round(time.monotonic() - started, 2),
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.generate_data",
        description="Write deterministic synthetic events, products and profiles into a landing zone "
                    "(OUT/events, OUT/products, OUT/profiles). Same arguments, same bytes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--users", type=_positive, default=2000, help="number of users")
    parser.add_argument("--products", type=_positive, default=500, help="number of products")
    parser.add_argument("--events", type=_non_negative, default=50_000, help="exact number of events")
    parser.add_argument("--seed", type=int, default=42, help="random seed; also part of every file name")
    parser.add_argument("--out", type=Path, default=Path("var/landing"), help="landing zone folder")
    parser.add_argument("--start", type=_day, default=date(2026, 10, 1),
                        help="first day of the event window (UTC)")
    parser.add_argument("--days", type=_positive, default=30, help="length of the event window in days")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="jsonl", help="file format")
    parser.add_argument("--chunk-size", type=_positive, default=DEFAULT_CHUNK_EVENTS,
                        help="events (and product/profile rows) per file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counts = generate(args.out, users=args.users, products=args.products, events=args.events,
                      seed=args.seed, start=args.start, days=args.days, fmt=args.fmt,
                      chunk_size=args.chunk_size)
    print(f"wrote {counts['files']} {args.fmt} files under {args.out} in {counts['seconds']} s")
    print(f"  events:   {counts['events']:,} {counts['event_types']}")
    print(f"  products: {counts['products']:,} in {counts['categories']} categories")
    print(f"  profiles: {counts['profiles']:,} of {counts['users']:,} users")
    print(f"  window:   {counts['window'][0]} .. {counts['window'][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
