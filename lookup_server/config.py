"""Typed settings of the lookup server, built once from ``conf/server.toml`` (+ overrides)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from schemas.settings import data_dir
from schemas.snapshot import MAX_ITEMS


@dataclass(frozen=True)
class ServerConfig:
    snapshot_root: Path  # the folder holding CURRENT and one folder per version
    default_k: int
    max_k: int
    algorithm_preference: tuple[str, ...]  # a user's lists, tried in the evaluation's order (policy_path)
    similar_preference: tuple[str, ...]  # tried in order for a product's similar list
    reload_interval_seconds: float
    verify_checksums: bool
    policy_path: Path  # the nightly evaluation's policy.json (lookup_server/policy.py)
    admin_token: str = field(default="", repr=False)  # LOOKUP_ADMIN_TOKEN wins (lookup_server/admin.py)

    @classmethod
    def from_conf(cls, conf: Mapping) -> "ServerConfig":
        """Check and convert the merged ``server`` settings; raise ValueError naming the bad key."""
        config = cls(
            snapshot_root=resolve_snapshot_root(conf),
            default_k=_int(conf, "default_k", 20),
            max_k=_int(conf, "max_k", 200),
            algorithm_preference=_names(conf, "algorithm_preference"),
            similar_preference=_names(conf, "similar_preference"),
            reload_interval_seconds=float(conf.get("reload_interval_seconds", 1.0)),
            verify_checksums=bool(conf.get("verify_checksums", True)),
            policy_path=resolve_policy_path(conf),
            admin_token=str(conf.get("admin_token", "")),
        )
        # A list record holds at most MAX_ITEMS items, so a larger k could never be filled.
        if not 1 <= config.max_k <= MAX_ITEMS:
            raise ValueError(f"max_k must be in [1, {MAX_ITEMS}], got {config.max_k}")
        if not 1 <= config.default_k <= config.max_k:
            raise ValueError(f"default_k must be in [1, max_k={config.max_k}], got {config.default_k}")
        if not config.reload_interval_seconds > 0:
            raise ValueError(f"reload_interval_seconds must be > 0, got {config.reload_interval_seconds}")
        return config


@dataclass(frozen=True)
class SyncConfig:
    """``[sync]`` of conf/server.toml: how ``python -m lookup_server.sync`` pulls
    published snapshots from an object store into this host's ``snapshot_root``."""

    source: str  # s3://bucket/prefix: where the publish job put CURRENT and the versions
    snapshot_root: Path  # the lookup server's own (same data_dir and snapshot_dir)
    policy_path: Path  # the lookup server's policy_file: a pulled snapshot's policy.json is installed there
    poll_interval_seconds: float = 5.0
    keep_versions: int = 3
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = 9102  # 0: no metrics endpoint

    @classmethod
    def from_conf(cls, conf: Mapping) -> "SyncConfig":
        """Check and convert ``conf["sync"]`` of the merged ``server`` settings; ValueError names the bad key."""
        section = conf.get("sync", {})
        if not isinstance(section, Mapping):
            raise ValueError(f"[sync] must be a table, got {section!r}")
        source = section.get("source", "")
        if not isinstance(source, str):
            raise ValueError(f"[sync] source must be a string, got {source!r}")
        config = cls(
            source=source.strip(),
            snapshot_root=resolve_snapshot_root(conf),
            policy_path=resolve_policy_path(conf),
            poll_interval_seconds=_positive(section, "poll_interval_seconds", 5.0),
            keep_versions=_int(section, "keep_versions", 3, section="[sync] "),
            backoff_initial_seconds=_positive(section, "backoff_initial_seconds", 1.0),
            backoff_max_seconds=_positive(section, "backoff_max_seconds", 60.0),
            connect_timeout_seconds=_positive(section, "connect_timeout_seconds", 3.0),
            read_timeout_seconds=_positive(section, "read_timeout_seconds", 10.0),
            metrics_addr=str(section.get("metrics_addr", "127.0.0.1")),
            metrics_port=_int(section, "metrics_port", 9102, section="[sync] "),
        )
        if config.keep_versions < 1:
            raise ValueError(f"[sync] keep_versions must be >= 1, got {config.keep_versions}")
        if config.backoff_max_seconds < config.backoff_initial_seconds:
            raise ValueError(f"[sync] backoff_max_seconds ({config.backoff_max_seconds}) must be >= "
                             f"backoff_initial_seconds ({config.backoff_initial_seconds})")
        if not 0 <= config.metrics_port <= 65_535:
            raise ValueError(f"[sync] metrics_port must be in [0, 65535], got {config.metrics_port}")
        return config


def resolve_snapshot_root(conf: Mapping) -> Path:
    """The folder holding CURRENT and the versions: ``snapshot_dir``, relative to the data dir unless absolute."""
    snapshot_dir = Path(conf.get("snapshot_dir", "snapshots"))
    return snapshot_dir if snapshot_dir.is_absolute() else data_dir(conf) / snapshot_dir


def resolve_policy_path(conf: Mapping) -> Path:
    """The evaluation's policy.json the server follows: ``policy_file``, relative to the data dir unless absolute."""
    policy = Path(conf.get("policy_file", "evaluation/policy.json"))
    return policy if policy.is_absolute() else data_dir(conf) / policy


def _int(conf: Mapping, key: str, default: int, section: str = "") -> int:
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{section}{key} must be an integer, got {value!r}")
    return value


def _positive(section: Mapping, key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"[sync] {key} must be a number > 0, got {value!r}")
    return float(value)


def _names(conf: Mapping, key: str) -> tuple[str, ...]:
    value = conf.get(key, [])
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of algorithm names, got {value!r}")
    return tuple(value)
