"""Which shard of the snapshot holds a user: one rule for the snapshot build, the
router and the tests.

The router is nginx, and the rule is the one its ``split_clients`` module applies:
MurmurHash2 (nginx's ``ngx_murmur_hash2``) of the user id in decimal, compared with
cumulative bounds derived from percentages with two decimals. Shard ``i`` of ``n``
holds the users whose hash falls in the ``i``-th range. Why not ``hash $id
consistent``: its ring is built from the servers' addresses, so the build would have
to know them, and a host replaced under a new address would receive users its
snapshot does not hold (docs/scaling.md says more).

``shard_of`` must give exactly nginx's answer, so the integer steps below copy
``ngx_http_split_clients_module.c``: each part's percentage is read as hundredths
(``33.33%`` -> 3333); the bound after a part is ``last += hundredths * 0xffffffff //
10000``; a hash goes to the first part whose bound exceeds it; the last part is
written ``*`` (the rest), so no hash is left without a shard.
"""
from __future__ import annotations

from bisect import bisect_right
from functools import lru_cache

HASH_MASK = 0xFFFFFFFF
MURMUR_M = 0x5BD1E995
HUNDREDTHS = 10_000  # 100.00 %: split_clients reads percentages with two decimals


def murmur_hash2(data: bytes) -> int:
    """nginx's ``ngx_murmur_hash2``: 32-bit MurmurHash2, seed 0, little-endian blocks."""
    h = len(data) & HASH_MASK
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * MURMUR_M) & HASH_MASK
        k ^= k >> 24
        k = (k * MURMUR_M) & HASH_MASK
        h = ((h * MURMUR_M) & HASH_MASK) ^ k
    tail = data[whole:]
    if tail:
        for i in reversed(range(len(tail))):
            h ^= tail[i] << (8 * i)
        h = (h * MURMUR_M) & HASH_MASK
    h ^= h >> 13
    h = (h * MURMUR_M) & HASH_MASK
    h ^= h >> 15
    return h


def shard_hundredths(shards: int) -> list[int]:
    """Each shard's share in hundredths of a percent, as written in the router's
    config; the last one takes what is left (``*``), so the shares need not divide
    evenly (3 shards: 33.33 %, 33.33 %, 33.34 %)."""
    if not 1 <= shards <= HUNDREDTHS:
        raise ValueError(f"shards must be in [1, {HUNDREDTHS}], got {shards}")
    share = HUNDREDTHS // shards
    return [share] * (shards - 1) + [HUNDREDTHS - share * (shards - 1)]


def split_bounds(hundredths: list[int]) -> tuple[int, ...]:
    """Exclusive upper hash bound after each share, computed as ``split_clients`` does."""
    bounds, last = [], 0
    for share in hundredths:
        last += share * HASH_MASK // HUNDREDTHS
        bounds.append(last)
    return tuple(bounds)


@lru_cache(maxsize=64)
def shard_bounds(shards: int) -> tuple[int, ...]:
    """Exclusive upper hash bound of every shard but the last (which takes the rest)."""
    return split_bounds(shard_hundredths(shards)[:-1])


def user_hash(user_id: int) -> int:
    """The hash the router computes: of the id's canonical decimal form (no sign, no
    leading zeros; the router strips leading zeros before hashing)."""
    if user_id < 0:
        raise ValueError(f"user ids are non-negative, got {user_id}")
    return murmur_hash2(str(user_id).encode("ascii"))


def shard_of(user_id: int, shards: int) -> int:
    """Index (0-based) of the shard that holds ``user_id`` when the users are split into ``shards``."""
    return bisect_right(shard_bounds(shards), user_hash(user_id)) if shards > 1 else 0


def split_clients_parts(names: list[str]) -> list[tuple[str, str]]:
    """The body of nginx's ``split_clients`` block for shards called ``names``, in
    order: ``[("33.33%", names[0]), ("33.33%", names[1]), ("*", names[2])]``."""
    shares = shard_hundredths(len(names))
    parts = [(f"{h // 100}.{h % 100:02d}%", name) for h, name in zip(shares[:-1], names)]
    return parts + [("*", names[-1])]
