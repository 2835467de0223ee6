"""The snapshot: an LMDB environment plus a manifest, in ``<root>/<version>/``.

Layout on disk::

    <root>/CURRENT                  name of the version in service (written last, by rename)
    <root>/<version>/data.mdb       LMDB environment (one file, opened read-only by servers)
    <root>/<version>/manifest.json  see Manifest below; its checksum covers data.mdb

Named databases inside the environment:

``recs/<kind>/<algorithm>`` (kind: user, product, category, segment, global)
    key: user id as 8-byte big-endian unsigned; product id as 4-byte big-endian
    unsigned; category and profile segment key as UTF-8; global as ``b"all"``.
    value: a *ranked list record*, layout 2::

        offset 0   uint8    layout version (2)
        offset 1   uint8    flags (0, reserved)
        offset 2   uint16   n, number of items (little-endian, as all below)
        offset 4   float32  scale: the largest |score| among the finite ones (0: none)
        offset 8   uint32[n] product ids, best first
        offset 8+4n float16[n] score / scale, non-increasing

    8 + 6n bytes: a 100-item list is 608 bytes, so six fit a 4 KB page with their
    keys (four of layout 1's 804). Dividing by the list's largest score keeps every
    float16 within [-1, 1], so none overflows whatever the algorithm's range, and
    each score keeps its own 11 significant bits (relative error <= 2^-11, about
    0.05 %; scores below 2^-14 of the largest lose more, down to 2^-24 of it in
    absolute terms). Rounding is monotone, so a non-increasing list stays
    non-increasing. NaN and infinite scores are kept as they are. The first k ids
    and scores are read straight from the LMDB page with ``struct.unpack_from`` (no
    copy of the record).

    Layout 1 (read, no longer written): the same header without the scale, then
    uint32[n] ids at offset 4 and float32[n] scores at 4+4n; 4 + 8n bytes.

``products``
    key: product id (4-byte big-endian). value: a *product record*::

        offset 0   uint8    layout version (1)
        offset 1   uint8    flags: bit 0 = active
        offset 2   uint16   length of the category in bytes (c)
        offset 4   float32  price (NaN when unknown)
        offset 8   bytes[c] category, UTF-8

``users`` (optional: snapshots built before it existed lack it)
    key: user id (8-byte big-endian). value: a *user record*::

        offset 0   uint8    layout version (1)
        offset 1   uint8    activity: 0 new, 1 light, 2 heavy (ACTIVITY_CODES)
        offset 2   uint16   length of the profile segment key in bytes (s; 0: no profile)
        offset 4   bytes[s] profile segment key, UTF-8 (a key of ``recs/segment/...``)

Big-endian keys keep LMDB's byte order equal to numeric order.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

LAYOUT_VERSION = 1  # of product and user records
LIST_LAYOUT_VERSION = 2  # of ranked list records written now; LAYOUT_VERSION's are still read
FORMAT_VERSION = 1
CURRENT_POINTER = "CURRENT"
MANIFEST_FILE = "manifest.json"
DATA_FILE = "data.mdb"
# The evaluation's verdict (default order and bandit priors), when the data dir had one at
# build time: a snapshot carries it, listed and checksummed in its manifest, so a lookup
# host that pulls its snapshots from a store gets the verdict with the lists it ranks.
POLICY_FILE = "policy.json"
PRODUCTS_DB = "products"
USERS_DB = "users"
ACTIVITY_CODES = {"new": 0, "light": 1, "heavy": 2}
_ACTIVITY_NAMES = {code: name for name, code in ACTIVITY_CODES.items()}
GLOBAL_KEY = b"all"
MAX_ITEMS = 65_535  # n is a uint16
SCORE_RELATIVE_ERROR = 2.0 ** -11  # of a layout-2 score at least 2^-14 of its list's largest (float16's 11 bits)

_LIST_HEADER = struct.Struct("<BBH")
_SCALED_LIST_HEADER = struct.Struct("<BBHf")
_PRODUCT_HEADER = struct.Struct("<BBHf")
PRODUCT_HEADER_SIZE = _PRODUCT_HEADER.size  # the category's UTF-8 bytes follow it
_USER_HEADER = struct.Struct("<BBH")
_USER_KEY = struct.Struct(">Q")
_PRODUCT_KEY = struct.Struct(">I")


class SnapshotFormatError(ValueError):
    """A record, key or manifest does not follow the layout above.

    ``reason`` says what kind of fault in one word a metric can carry as a label
    (a lookup server counts the versions it refuses by it); the message says the rest.
    """

    def __init__(self, message: str, reason: str = "layout"):
        super().__init__(message)
        self.reason = reason


def recs_db_name(kind: str, algorithm: str) -> str:
    """Name of the named database holding ``algorithm``'s lists for subjects of ``kind``."""
    return f"recs/{kind}/{algorithm}"


def parse_recs_db_name(name: str) -> tuple[str, str] | None:
    """``(kind, algorithm)`` for a ``recs/...`` database name, else None."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "recs":
        return parts[1], parts[2]
    return None


# --- keys -----------------------------------------------------------------

def user_key(user_id: int) -> bytes:
    return _USER_KEY.pack(user_id)


def product_key(product_id: int) -> bytes:
    return _PRODUCT_KEY.pack(product_id)


def subject_key(kind: str, subject_id: str) -> bytes:
    """Key of a subject given as in the candidates table (decimal id, category, 'all')."""
    if kind == "user":
        return user_key(int(subject_id))
    if kind == "product":
        return product_key(int(subject_id))
    if kind in ("category", "segment", "global"):
        return subject_id.encode("utf-8")
    raise SnapshotFormatError(f"unknown subject kind {kind!r}")


# --- ranked list records --------------------------------------------------

def pack_ranked_list(product_ids, scores) -> bytes:
    """Encode a ranked list (layout 2). ``product_ids`` and ``scores`` are equal-length sequences."""
    n = len(product_ids)
    if n != len(scores):
        raise SnapshotFormatError(f"{n} product ids but {len(scores)} scores")
    if n > MAX_ITEMS:
        raise SnapshotFormatError(f"{n} items exceed the {MAX_ITEMS} a record holds")
    try:
        scale = list_scale(scores)
        divisor = scale or 1.0
        # Each quotient rounded to float32 first, then to float16: what NumPy's float32
        # division and cast give, so the builder's vectorised packer writes the same bytes.
        quotients = struct.unpack(f"<{n}f", struct.pack(f"<{n}f", *(s / divisor for s in scores)))
        return (_SCALED_LIST_HEADER.pack(LIST_LAYOUT_VERSION, 0, n, scale)
                + struct.pack(f"<{n}I{n}e", *product_ids, *quotients))
    except (struct.error, TypeError, OverflowError) as exc:  # an id outside 0 .. 2^32-1, a score that is no number
        raise SnapshotFormatError(f"cannot pack ranked list: {exc}") from exc


def list_scale(scores) -> float:
    """A list's scale: its largest finite |score|, rounded to float32 as the header
    stores it (the quotients are taken against that stored value), 0.0 when it has none."""
    largest = max((abs(s) for s in scores if math.isfinite(s)), default=0.0)
    return struct.unpack("<f", struct.pack("<f", largest))[0]


def unpack_ranked_list(buf, k: int | None = None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Decode the first ``k`` (default all) items of a ranked list record, either layout.

    ``buf`` may be a memoryview straight from an LMDB read transaction.
    """
    if len(buf) < _LIST_HEADER.size:
        raise SnapshotFormatError("ranked list record shorter than its header")
    layout, _flags, n = _LIST_HEADER.unpack_from(buf, 0)
    m = n if k is None else max(0, min(k, n))
    if layout == LIST_LAYOUT_VERSION:
        if len(buf) != _SCALED_LIST_HEADER.size + 6 * n:
            raise SnapshotFormatError(f"ranked list of {n} items has {len(buf)} bytes")
        scale = _SCALED_LIST_HEADER.unpack_from(buf, 0)[3]
        ids = struct.unpack_from(f"<{m}I", buf, 8)
        quotients = struct.unpack_from(f"<{m}e", buf, 8 + 4 * n)
        # A list comprehension: a third faster here than map(scale.__mul__, ...).
        return ids, (tuple([q * scale for q in quotients]) if scale else quotients)
    if layout == LAYOUT_VERSION:
        if len(buf) != _LIST_HEADER.size + 8 * n:
            raise SnapshotFormatError(f"ranked list of {n} items has {len(buf)} bytes")
        return struct.unpack_from(f"<{m}I", buf, 4), struct.unpack_from(f"<{m}f", buf, 4 + 4 * n)
    raise SnapshotFormatError(f"ranked list layout {layout}, expected {LIST_LAYOUT_VERSION} or {LAYOUT_VERSION}")


# --- product records ------------------------------------------------------

@dataclass(frozen=True)
class ProductRecord:
    product_id: int
    category: str
    price: float | None
    active: bool


def pack_product(category: str, price: float | None, active: bool) -> bytes:
    cat = category.encode("utf-8")
    if len(cat) > 65_535:
        raise SnapshotFormatError("category longer than 65535 bytes")
    price_value = math.nan if price is None else float(price)
    return _PRODUCT_HEADER.pack(LAYOUT_VERSION, 1 if active else 0, len(cat), price_value) + cat


def unpack_product(product_id: int, buf) -> ProductRecord:
    if len(buf) < _PRODUCT_HEADER.size:
        raise SnapshotFormatError("product record shorter than its header")
    layout, flags, clen, price = _PRODUCT_HEADER.unpack_from(buf, 0)
    if layout != LAYOUT_VERSION or len(buf) != _PRODUCT_HEADER.size + clen:
        raise SnapshotFormatError("malformed product record")
    category = bytes(buf[_PRODUCT_HEADER.size:]).decode("utf-8")
    return ProductRecord(product_id, category, None if math.isnan(price) else price, bool(flags & 1))


# --- user records ---------------------------------------------------------

@dataclass(frozen=True)
class UserRecord:
    user_id: int
    activity: str                 # new, light or heavy
    profile_segment: str | None   # None: the user has no profile


def pack_user(activity: str, profile_segment: str | None) -> bytes:
    if activity not in ACTIVITY_CODES:
        raise SnapshotFormatError(f"unknown activity segment {activity!r}")
    segment = (profile_segment or "").encode("utf-8")
    if len(segment) > 65_535:
        raise SnapshotFormatError("profile segment key longer than 65535 bytes")
    return _USER_HEADER.pack(LAYOUT_VERSION, ACTIVITY_CODES[activity], len(segment)) + segment


def unpack_user(user_id: int, buf) -> UserRecord:
    if len(buf) < _USER_HEADER.size:
        raise SnapshotFormatError("user record shorter than its header")
    layout, code, length = _USER_HEADER.unpack_from(buf, 0)
    if layout != LAYOUT_VERSION or code not in _ACTIVITY_NAMES or len(buf) != _USER_HEADER.size + length:
        raise SnapshotFormatError("malformed user record")
    segment = bytes(buf[_USER_HEADER.size:]).decode("utf-8") if length else None
    return UserRecord(user_id, _ACTIVITY_NAMES[code], segment)


# --- manifest -------------------------------------------------------------

@dataclass
class Manifest:
    """What a snapshot holds and where it came from; ``files`` lets readers verify it."""

    version: str
    created_at: str
    as_of: str
    format_version: int = FORMAT_VERSION
    delta_versions: dict[str, int] = field(default_factory=dict)
    databases: dict[str, int] = field(default_factory=dict)  # name -> row count
    model_versions: dict[str, str] = field(default_factory=dict)  # algorithm -> model version
    files: dict[str, dict] = field(default_factory=dict)  # name -> {bytes, sha256}
    config_digest: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
            manifest = cls(**data)
        except (ValueError, TypeError) as exc:
            raise SnapshotFormatError(f"unreadable manifest: {exc}", "bad_manifest") from exc
        if manifest.format_version != FORMAT_VERSION:
            raise SnapshotFormatError(f"snapshot format {manifest.format_version}, expected {FORMAT_VERSION}",
                                      "bad_manifest")
        if DATA_FILE not in manifest.files:
            raise SnapshotFormatError(f"manifest lists no {DATA_FILE}", "bad_manifest")
        return manifest


def file_digest(path: Path) -> dict:
    """Size and SHA-256 of a file, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
            size += len(block)
    return {"bytes": size, "sha256": sha.hexdigest()}


def verify_snapshot_dir(path: Path, check_checksums: bool = True) -> Manifest:
    """Read and check the manifest of the snapshot in ``path``; raise SnapshotFormatError if anything is off."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise SnapshotFormatError(f"{path.name}: no {MANIFEST_FILE}", "no_manifest")
    manifest = Manifest.from_json(manifest_path.read_text())
    if manifest.version != path.name:
        raise SnapshotFormatError(f"{path.name}: manifest names version {manifest.version!r}", "bad_manifest")
    for name, expected in manifest.files.items():
        file_path = path / name
        if not file_path.is_file():
            raise SnapshotFormatError(f"{path.name}: {name} missing", "file_missing")
        if file_path.stat().st_size != expected["bytes"]:
            raise SnapshotFormatError(f"{path.name}: {name} has {file_path.stat().st_size} bytes, "
                                      f"manifest says {expected['bytes']}", "size_mismatch")
        if check_checksums and file_digest(file_path)["sha256"] != expected["sha256"]:
            raise SnapshotFormatError(f"{path.name}: {name} checksum mismatch", "checksum_mismatch")
    return manifest


def read_current_version(root: Path) -> str | None:
    """The version named by ``<root>/CURRENT``, or None when nothing is published."""
    try:
        text = (root / CURRENT_POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
