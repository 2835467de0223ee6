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
        snapshot_dir = Path(conf.get("snapshot_dir", "snapshots"))
        root = snapshot_dir if snapshot_dir.is_absolute() else data_dir(conf) / snapshot_dir
        policy = Path(conf.get("policy_file", "evaluation/policy.json"))
        config = cls(
            snapshot_root=root,
            default_k=_int(conf, "default_k", 20),
            max_k=_int(conf, "max_k", 200),
            algorithm_preference=_names(conf, "algorithm_preference"),
            similar_preference=_names(conf, "similar_preference"),
            reload_interval_seconds=float(conf.get("reload_interval_seconds", 1.0)),
            verify_checksums=bool(conf.get("verify_checksums", True)),
            policy_path=policy if policy.is_absolute() else data_dir(conf) / policy,
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


def _int(conf: Mapping, key: str, default: int) -> int:
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return value


def _names(conf: Mapping, key: str) -> tuple[str, ...]:
    value = conf.get(key, [])
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of algorithm names, got {value!r}")
    return tuple(value)
