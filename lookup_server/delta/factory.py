"""Open the delta store that the ``[delta]`` settings describe.

Keys (all optional):

- ``redis_url``: ``redis://``, ``rediss://`` or ``unix://`` URL of the shared Redis;
  "" (the default) uses the embedded LMDB store of this host instead;
- ``path``: the LMDB folder, relative to ``data_dir`` unless absolute ("realtime");
- ``timeout_ms``: Redis connect and reply timeout (50);
- ``map_size_mb``: the LMDB map size, i.e. its maximum size on disk (1024);
- ``fsync``: whether each LMDB commit waits for the disk (false; see LmdbDeltaStore);
- ``key_prefix``: prefix of every Redis key ("recsys:");
- the fields of ``DeltaLimits`` (``max_events_per_user``, ``user_ttl_seconds``, ...).

Other keys are left to whoever reads them (the circuit breaker's settings, say).
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Mapping

from lookup_server.delta import DeltaLimits, DeltaStore

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_delta_store(settings: Mapping, data_dir: Path) -> DeltaStore:
    """The Redis store if ``redis_url`` is set, else the LMDB one; ValueError names a bad key."""
    limits = delta_limits(settings)
    redis_url = settings.get("redis_url", "")
    if not isinstance(redis_url, str) or (redis_url and not redis_url.startswith(REDIS_SCHEMES)):
        raise ValueError(f"redis_url must be '' or a {'/'.join(REDIS_SCHEMES)} URL, got {redis_url!r}")
    timeout_ms = _positive(settings, "timeout_ms", 50, int)
    map_size_mb = _positive(settings, "map_size_mb", 1024, int)
    key_prefix = settings.get("key_prefix", "recsys:")
    if not isinstance(key_prefix, str):
        raise ValueError(f"key_prefix must be a string, got {key_prefix!r}")
    fsync = settings.get("fsync", False)
    if not isinstance(fsync, bool):
        raise ValueError(f"fsync must be true or false, got {fsync!r}")
    path = settings.get("path", "realtime")
    if not isinstance(path, str) or not path:
        raise ValueError(f"path must be a non-empty folder name, got {path!r}")
    # Imported here: a server on one backend never loads the other's client library.
    if redis_url:
        from lookup_server.delta.redis_store import RedisDeltaStore
        return RedisDeltaStore(redis_url, limits, timeout_ms=timeout_ms, key_prefix=key_prefix)
    from lookup_server.delta.lmdb_store import LmdbDeltaStore
    folder = Path(path) if Path(path).is_absolute() else Path(data_dir) / path
    return LmdbDeltaStore(folder, limits, map_size=map_size_mb << 20, fsync=fsync)


def delta_limits(settings: Mapping) -> DeltaLimits:
    """``DeltaLimits`` with each field the settings give (all must be > 0)."""
    values = {}
    for field in fields(DeltaLimits):
        if field.name in settings:
            values[field.name] = _positive(settings, field.name, None,
                                           int if isinstance(field.default, int) else float)
    return DeltaLimits(**values)


def _positive(settings: Mapping, key: str, default, kind: type):
    """``settings[key]`` (or ``default``) checked to be a number of ``kind`` (an int is a
    fine float), finite and greater than 0."""
    value = settings.get(key, default)
    allowed = (int,) if kind is int else (int, float)
    if (isinstance(value, bool) or not isinstance(value, allowed) or not value > 0
            or not math.isfinite(value)):
        noun = "integer" if kind is int else "number"
        raise ValueError(f"{key} must be a positive {noun}, got {value!r}")
    return kind(value)
