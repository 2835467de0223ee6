"""N shard snapshots of one synthetic user population, split by ``schemas.sharding.shard_of``.

Shard ``i`` of ``n`` is published as version ``shard-<i>-of-<n>`` under
``<root>/shard-<i>/snapshots/`` and holds only its users' lists and ``users``
records; products, their neighbour lists and the category, segment and global lists
are written into every shard, as the snapshot build would (any shard answers
/similar and unknown users).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.serving.synthetic import write_snapshot
from schemas.sharding import shard_of


def shard_version(index: int, shards: int) -> str:
    return f"shard-{index}-of-{shards}"


def shard_snapshot_root(root: Path, index: int) -> Path:
    """The folder a shard group's servers read (RECSYS__SERVER__SNAPSHOT_DIR)."""
    return root / f"shard-{index}" / "snapshots"


def users_by_shard(users: int, shards: int) -> list[np.ndarray]:
    """The ids ``0 .. users-1`` of each shard, ascending."""
    assignment = np.fromiter((shard_of(u, shards) for u in range(users)), dtype=np.int32, count=users)
    return [np.flatnonzero(assignment == i) for i in range(shards)]


def write_shards(root: Path, shards: int, users: int, products: int, list_length: int = 100,
                 seed: int = 1) -> list[dict]:
    """Write and publish every shard; per shard: its users and what ``write_snapshot`` reports."""
    written = []
    for index, ids in enumerate(users_by_shard(users, shards)):
        info = write_snapshot(shard_snapshot_root(root, index), shard_version(index, shards), users=0,
                              products=products, list_length=list_length, seed=seed + index, user_ids=ids)
        written.append({"shard": index, "users": int(len(ids)), **info})
    return written
