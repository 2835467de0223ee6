"""Which algorithm answers a request: Thompson sampling per user segment, rewarded by
the clicks, carts and purchases the collector attributes through ``request_id``.

Each (segment, algorithm) has a reward rate per impression with a Gamma prior:
rewards are weighted (click 1, cart 2, purchase 4 by default), so a Gamma-Poisson
model fits where a Beta-Bernoulli one would not. Per request, a rate is drawn for
each candidate algorithm from ``Gamma(a0 + rewards, b0 + impressions)`` and the
highest draw answers: an algorithm that earns more per impression wins more traffic,
and every algorithm keeps a chance in proportion to how unsure we still are.

Priors come from the nightly offline evaluation (``evaluation/policy.json``, read by
``lookup_server.policy``): in a
segment, the best algorithm offline starts at ``prior_rate`` rewards per impression
and the others in proportion to their offline NDCG, worth ``prior_impressions``
impressions of evidence. Without a policy every algorithm starts equal.

Counts live in the shared delta store (every replica reads and writes the same
ones; a restart loses nothing); each worker caches them for ``refresh_seconds``.
A pinned algorithm (admin endpoint) answers everything until unpinned.
Segments are the offline evaluation's: ``new`` (no list in the snapshot), ``light``
and ``heavy`` (the activity the snapshot's ``users`` database records), each with
the priors of the policy's segment of the same name; a user with lists but no
activity record (an older snapshot) is ``known``, with the policy's ``all``.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

NEW, LIGHT, HEAVY, KNOWN = "new", "light", "heavy", "known"
# Which policy segment's offline scores seed each serving segment's priors.
POLICY_SEGMENT = {NEW: "new", LIGHT: "light", HEAVY: "heavy", KNOWN: "all"}


def serving_segment(activity: str | None, personalised: bool) -> str:
    """The bandit segment of a user: ``new`` without a list of their own, else their
    activity segment (``light``/``heavy``) when the snapshot records one, else ``known``."""
    if not personalised:
        return NEW
    return activity if activity in (LIGHT, HEAVY) else KNOWN


@dataclass(frozen=True)
class BanditSettings:
    enabled: bool = True
    prior_rate: float = 0.05         # rewards per impression the offline best starts at
    prior_impressions: float = 50.0  # how many impressions the prior is worth
    refresh_seconds: float = 1.0     # how stale the shared counts may be in a worker

    @classmethod
    def from_conf(cls, conf: Mapping) -> "BanditSettings":
        settings = cls(**conf)
        if not (settings.prior_rate > 0 and settings.prior_impressions > 0 and settings.refresh_seconds >= 0):
            raise ValueError("bandit: prior_rate and prior_impressions must be > 0, refresh_seconds >= 0")
        return settings


def prior_rates(offline: Mapping[str, float], algorithms: Sequence[str], best_rate: float) -> dict[str, float]:
    """Each algorithm's prior reward rate: ``best_rate`` times its offline score over
    the best one's; algorithms the policy does not score get the mean of those it does."""
    scored = {a: offline[a] for a in algorithms if a in offline and offline[a] > 0}
    if not scored:
        return {a: best_rate for a in algorithms}
    top = max(scored.values())
    mean = sum(scored.values()) / len(scored)
    # A floor keeps an algorithm that scored 0 offline from never being tried.
    return {a: max(best_rate * scored.get(a, mean) / top, best_rate / 20) for a in algorithms}


class Bandit:
    """The per-worker chooser; counts and pin come from the shared store via ``read``."""

    def __init__(self, settings: BanditSettings, priors: Callable[[], Mapping[str, Mapping[str, float]]],
                 read_counts: Callable[[], dict[tuple[str, str], tuple[float, float]]],
                 read_pinned: Callable[[], str | None],
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.priors = priors
        self._read_counts, self._read_pinned = read_counts, read_pinned
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], tuple[float, float]] = {}
        self._pinned: str | None = None
        self._read_at: float | None = None
        # Prior rates by (segment, candidates), for the priors object they came from:
        # the same few combinations come back on every request.
        self._rates: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        self._rates_priors: object = None

    def choose(self, segment: str, algorithms: Sequence[str]) -> str:
        """The algorithm to answer with, among ``algorithms`` (non-empty)."""
        counts, pinned = self._shared()
        if pinned in algorithms:
            return pinned
        rates = self._prior_rates(segment, tuple(algorithms))
        n0 = self.settings.prior_impressions
        best, best_draw = algorithms[0], -1.0
        for algorithm in algorithms:
            impressions, rewards = counts.get((segment, algorithm), (0.0, 0.0))
            draw = self._rng.gammavariate(n0 * rates[algorithm] + rewards, 1.0 / (n0 + impressions))
            if draw > best_draw:
                best, best_draw = algorithm, draw
        return best

    def _prior_rates(self, segment: str, algorithms: tuple[str, ...]) -> dict[str, float]:
        priors = self.priors()
        if priors is not self._rates_priors:  # a new policy.json: start over
            self._rates, self._rates_priors = {}, priors
        rates = self._rates.get((segment, algorithms))
        if rates is None:
            offline = priors.get(POLICY_SEGMENT.get(segment, "all"), {})
            rates = self._rates[segment, algorithms] = prior_rates(offline, algorithms, self.settings.prior_rate)
        return rates

    def segment_and_order(self, available: Sequence[str], preference: Sequence[str],
                          activity: str | None = None) -> tuple[str, tuple[str, ...]]:
        """The user's segment and the algorithms to try in order: the one sampled among
        ``available`` (those of ``preference`` the user has lists in) first, then the
        rest of ``preference`` (so the fallback chain still holds)."""
        segment = serving_segment(activity, bool(available))
        if not available:
            return segment, tuple(preference)
        chosen = self.choose(segment, list(available))
        return segment, (chosen, *(a for a in preference if a != chosen))

    def _shared(self) -> tuple[dict, str | None]:
        """The shared counts and pin, re-read at most every ``refresh_seconds``. A read
        that fails keeps the last values (the store's breaker reports the outage)."""
        now = self._clock()
        with self._lock:
            if self._read_at is not None and now - self._read_at < self.settings.refresh_seconds:
                return self._counts, self._pinned
            self._read_at = now
        counts, pinned = self._read_counts(), self._read_pinned()
        with self._lock:
            if counts is not None:
                self._counts = counts
            self._pinned = pinned
            return self._counts, self._pinned
