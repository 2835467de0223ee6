"""The nightly evaluation's verdict (``evaluation/policy.json``), as the server uses it:
each segment's offline scores seed the bandit's priors, and ``preference`` (every
algorithm by its score over all users, best first) orders the default chain, so the
algorithm that measured best leads and a blend that scored below its parts does not.

The file is re-read when it changes (checked at most every ``check_seconds``); one
that is absent or unreadable leaves the configured order and equal priors.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    priors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # segment -> algorithm -> score
    preference: tuple[str, ...] = ()  # best first over all users

    def order(self, configured: Sequence[str]) -> tuple[str, ...]:
        """``configured`` (the operator's algorithms) in the measured order: those the
        evaluation scored, best first, then the rest as configured."""
        measured = [a for a in self.preference if a in configured]
        return (*measured, *(a for a in configured if a not in measured))


def load_policy(path: Path) -> Policy:
    """The policy in ``path``; an empty one if absent or unreadable."""
    try:
        content = json.loads(Path(path).read_text())
        return Policy(priors=dict(content.get("priors", {})),
                      preference=tuple(str(a) for a in content.get("preference", ())))
    except FileNotFoundError:
        return Policy()
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("ignoring policy %s: %s", path, exc)
        return Policy()


class OfflinePolicy:
    """``policy.json`` followed as the nightly evaluation rewrites it."""

    def __init__(self, path: Path, check_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self._check_seconds, self._clock = check_seconds, clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._mtime: float | None = None
        self._policy = Policy()

    def __call__(self) -> Policy:
        now = self._clock()
        with self._lock:
            if self._checked_at is not None and now - self._checked_at < self._check_seconds:
                return self._policy
            self._checked_at = now
            try:
                mtime = self.path.stat().st_mtime
            except OSError:
                mtime = None
            if mtime != self._mtime:
                self._mtime, self._policy = mtime, load_policy(self.path) if mtime else Policy()
            return self._policy

    def priors(self) -> Mapping[str, Mapping[str, float]]:
        """The bandit's priors: the same object until the file changes."""
        return self().priors
