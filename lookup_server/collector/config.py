"""Typed settings of the event collector, built once from ``conf/collector.toml``
(+ environment, + test overrides). Every bad value is refused at start-up with a
message naming the key, so a misconfigured collector never accepts a request."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from schemas import EVENT_TYPES
from schemas.settings import data_dir

from lookup_server.collector.landing_writer import DEFAULT_ROTATE_BYTES, DEFAULT_ROTATE_SECONDS

TOKEN_ENV = "COLLECTOR_TOKEN"
MIN_TOKEN_CHARS = 16
DEFAULT_REWARDS = {"click": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
LANDING_TABLES = ("events", "products")  # the tables the collector writes
# Keys of [delta] read here (as the lookup server reads them), not by the store factory.
_NOT_STORE_KEYS = ("enabled", "breaker_failures", "breaker_reset_seconds")


@dataclass(frozen=True)
class CollectorConfig:
    data_dir: Path
    token: str = field(repr=False)
    max_batch: int = 1000
    max_body_bytes: int = 1 << 20
    rewards: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARDS))
    rotate_bytes: int = DEFAULT_ROTATE_BYTES
    rotate_seconds: float = DEFAULT_ROTATE_SECONDS
    recover_all_at_start: bool = True
    delta_enabled: bool = True
    delta: Mapping = field(default_factory=dict)  # [delta] for open_delta_store (breaker keys removed)
    breaker_failures: int = 3
    breaker_reset_seconds: float = 2.0

    @property
    def landing_root(self) -> Path:
        """``<data_dir>/landing``, where the batch ingest reads (jobs.paths.DataPaths)."""
        return self.data_dir / "landing"

    def landing_folder(self, table: str) -> Path:
        return self.landing_root / table

    @classmethod
    def from_conf(cls, conf: Mapping, environ: Mapping[str, str] | None = None) -> "CollectorConfig":
        """Check and convert the merged ``collector`` settings; ValueError names the bad key."""
        environ = os.environ if environ is None else environ
        token = environ.get(TOKEN_ENV) or conf.get("token") or ""
        if not isinstance(token, str):
            raise ValueError(f"token must be a string, got {type(token).__name__}")
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the collector needs a bearer token of at least {MIN_TOKEN_CHARS} characters: "
                f"set {TOKEN_ENV} (or 'token' in conf/collector.toml); "
                + ("none is configured" if not token else "the configured one is too short"))
        if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
            raise ValueError(f"the collector token ({TOKEN_ENV} or 'token') must be printable ASCII "
                             "without spaces, as it travels in an Authorization header")
        delta = conf.get("delta", {})
        if not isinstance(delta, Mapping):
            raise ValueError(f"[delta] must be a table, got {delta!r}")
        store_settings = {k: v for k, v in delta.items() if k not in _NOT_STORE_KEYS}
        return cls(
            data_dir=data_dir(conf),
            token=token,
            max_batch=_int(conf, "max_batch", 1000, low=1),
            max_body_bytes=_int(conf, "max_body_bytes", 1 << 20, low=1024),
            rewards=_rewards(conf.get("rewards", DEFAULT_REWARDS)),
            rotate_bytes=_int(conf, "rotate_bytes", DEFAULT_ROTATE_BYTES, low=1),
            rotate_seconds=_positive(conf, "rotate_seconds", DEFAULT_ROTATE_SECONDS),
            recover_all_at_start=_bool(conf, "recover_all_at_start", True),
            delta_enabled=_bool(delta, "enabled", True, "[delta] "),
            delta=store_settings,
            breaker_failures=_int(delta, "breaker_failures", 3, low=1, section="[delta] "),
            breaker_reset_seconds=_positive(delta, "breaker_reset_seconds", 2.0, "[delta] "),
        )


def _int(conf: Mapping, key: str, default: int, low: int, section: str = "") -> int:
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{section}{key} must be an integer >= {low}, got {value!r}")
    return value


def _positive(conf: Mapping, key: str, default: float, section: str = "") -> float:
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{section}{key} must be a positive number, got {value!r}")
    return float(value)


def _bool(conf: Mapping, key: str, default: bool, section: str = "") -> bool:
    value = conf.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{section}{key} must be true or false, got {value!r}")
    return value


def _rewards(value) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"[rewards] must be a table of event type = amount, got {value!r}")
    rewards = {}
    for event_type, amount in value.items():
        if event_type not in EVENT_TYPES:
            raise ValueError(f"[rewards] {event_type!r} is not an event type ({', '.join(EVENT_TYPES)})")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                or not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"[rewards] {event_type} must be a positive number, got {amount!r}")
        rewards[event_type] = float(amount)
    return rewards
