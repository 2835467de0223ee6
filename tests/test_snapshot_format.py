"""The snapshot layout (schemas/snapshot.py) and the writer that builds and publishes it
(jobs/snapshot_writer.py). No Spark."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import lmdb
import pytest

from jobs.snapshot_writer import (
    SnapshotWriter, list_versions, new_version, prune, publish, remove_abandoned_builds,
)
from schemas.snapshot import (
    ACTIVITY_CODES, DATA_FILE, GLOBAL_KEY, MANIFEST_FILE, MAX_ITEMS, PRODUCTS_DB, SCORE_RELATIVE_ERROR, Manifest,
    ProductRecord, SnapshotFormatError, UserRecord, pack_product, pack_ranked_list, pack_user, parse_recs_db_name,
    product_key, read_current_version, recs_db_name, subject_key, unpack_product, unpack_ranked_list, unpack_user,
    user_key, verify_snapshot_dir,
)

IDS = [7, 3, 2**32 - 1]
SCORES = [0.5, 0.25, -1.0]  # exact in float32
MAP_SIZE = 16 << 20


# --- ranked lists -------------------------------------------------------------

def test_ranked_list_round_trip():
    """A packed list is 8 + 6n bytes and unpacks to the same ids and scores, also from
    a memoryview (these scores are exact: each is a power of two times the largest)."""
    buf = pack_ranked_list(IDS, SCORES)
    assert len(buf) == 8 + 6 * 3
    assert unpack_ranked_list(buf) == (tuple(IDS), tuple(SCORES))
    assert unpack_ranked_list(memoryview(buf)) == (tuple(IDS), tuple(SCORES))


def test_ranked_list_scores_keep_eleven_bits_whatever_their_range():
    """Scores from 1e-3 to 1e6 (a popularity count past float16's 65504) come back
    within 2^-11 of themselves, and a non-increasing list stays non-increasing."""
    for largest in (1e-3, 1.0, 1e6):
        scores = [largest * 0.97 ** i for i in range(100)]
        ids, got = unpack_ranked_list(pack_ranked_list(list(range(100)), scores))
        assert ids == tuple(range(100))
        assert all(abs(g - s) <= s * SCORE_RELATIVE_ERROR for g, s in zip(got, scores))
        assert all(a >= b for a, b in zip(got, got[1:]))


def test_ranked_list_keeps_nan_infinite_and_zero_scores():
    """Non-finite scores do not set the scale and pass through; an all-zero list has scale 0."""
    _, got = unpack_ranked_list(pack_ranked_list([1, 2, 3, 4], [math.inf, 2.0, 1.0, math.nan]))
    assert got[:3] == (math.inf, 2.0, 1.0) and math.isnan(got[3])
    buf = pack_ranked_list([1, 2], [0.0, 0.0])
    assert buf[4:8] == bytes(4) and unpack_ranked_list(buf) == ((1, 2), (0.0, 0.0))


def test_layout_1_lists_are_still_read():
    """A snapshot written before layout 2 (float32 scores, no scale) keeps serving."""
    buf = struct.pack("<BBH3I3f", 1, 0, 3, *IDS, *SCORES)
    assert unpack_ranked_list(buf) == (tuple(IDS), tuple(SCORES))
    assert unpack_ranked_list(memoryview(buf), 2) == ((7, 3), (0.5, 0.25))


def test_ranked_list_first_k():
    """k below n returns the first k items; k above n returns all of them."""
    buf = pack_ranked_list(IDS, SCORES)
    assert unpack_ranked_list(buf, 2) == ((7, 3), (0.5, 0.25))
    assert unpack_ranked_list(buf, 10) == (tuple(IDS), tuple(SCORES))
    assert unpack_ranked_list(buf, 0) == ((), ())


def test_empty_ranked_list():
    """An empty list is a bare 8-byte header with scale 0."""
    buf = pack_ranked_list([], [])
    assert buf == bytes([2, 0, 0, 0, 0, 0, 0, 0])
    assert unpack_ranked_list(buf) == ((), ())


def test_ranked_list_size_limits():
    """Unequal lengths, more than 65535 items and scores past float32 are refused; exactly 65535 fit."""
    with pytest.raises(SnapshotFormatError, match="2 product ids but 1 scores"):
        pack_ranked_list([1, 2], [0.5])
    with pytest.raises(SnapshotFormatError, match="exceed"):
        pack_ranked_list([0] * (MAX_ITEMS + 1), [0.0] * (MAX_ITEMS + 1))
    with pytest.raises(SnapshotFormatError, match="cannot pack"):
        pack_ranked_list([1], [1e39])
    assert len(pack_ranked_list(list(range(MAX_ITEMS)), [0.0] * MAX_ITEMS)) == 8 + 6 * MAX_ITEMS


@pytest.mark.parametrize("buf, message", [
    (bytes([3]) + pack_ranked_list(IDS, SCORES)[1:], "layout 3"),
    (pack_ranked_list(IDS, SCORES)[:-1], "3 items has 25 bytes"),
    (pack_ranked_list(IDS, SCORES) + b"\0", "3 items has 27 bytes"),
    (bytes([1]) + pack_ranked_list(IDS, SCORES)[1:], "3 items has 26 bytes"),
    (b"\x02\x00", "shorter than its header"),
], ids=["layout", "truncated", "trailing", "layout 1 length", "header"])
def test_malformed_ranked_list_rejected(buf, message):
    """A wrong layout version or a length that disagrees with n raises SnapshotFormatError."""
    with pytest.raises(SnapshotFormatError, match=message):
        unpack_ranked_list(buf)


# --- product records ------------------------------------------------------------

def test_product_round_trip():
    """Category (UTF-8, length in bytes), float32 price and the active flag survive."""
    category = "électronique.téléphone"
    buf = pack_product(category, 12.5, True)
    assert struct.unpack_from("<H", buf, 2)[0] == len(category.encode("utf-8")) == 25
    assert unpack_product(5, buf) == ProductRecord(5, category, 12.5, True)
    assert unpack_product(6, pack_product("a", 19.99, True)).price == pytest.approx(19.99, rel=1e-6)


def test_product_unknown_price_and_inactive():
    """price None is stored as NaN and read back as None; active False clears the flag."""
    buf = pack_product("", None, False)
    assert math.isnan(struct.unpack_from("<f", buf, 4)[0])
    assert buf[1] == 0
    assert unpack_product(9, buf) == ProductRecord(9, "", None, False)


@pytest.mark.parametrize("buf", [
    bytes([2]) + pack_product("a", 1.0, True)[1:],
    pack_product("ab", 1.0, True)[:-1],
    pack_product("a", 1.0, True)[:7],
], ids=["layout", "truncated", "header"])
def test_malformed_product_rejected(buf):
    """A wrong layout or a category length that disagrees with the record raises."""
    with pytest.raises(SnapshotFormatError):
        unpack_product(1, buf)


# --- user records -----------------------------------------------------------------

@pytest.mark.parametrize("activity, segment", [("heavy", "country=DE|age_band=25-34"), ("new", None),
                                               ("light", "pays=Côte d'Ivoire")])
def test_user_round_trip(activity, segment):
    buf = pack_user(activity, segment)
    assert buf[1] == ACTIVITY_CODES[activity]
    assert len(buf) == 4 + len((segment or "").encode("utf-8"))
    assert unpack_user(3, buf) == UserRecord(3, activity, segment)


@pytest.mark.parametrize("buf", [
    bytes([2]) + pack_user("light", "a")[1:],
    bytes([1, 7]) + pack_user("light", "a")[2:],
    pack_user("light", "ab")[:-1],
    b"\x01",
], ids=["layout", "activity code", "truncated", "header"])
def test_malformed_user_rejected(buf):
    with pytest.raises(SnapshotFormatError):
        unpack_user(1, buf)


def test_unknown_activity_cannot_be_packed():
    with pytest.raises(SnapshotFormatError, match="activity"):
        pack_user("dormant", None)


# --- keys and names ---------------------------------------------------------------

def test_keys_sort_numerically():
    """Big-endian keys sort bytewise in numeric order (1 < 256 < 2^40)."""
    users = [2**40, 1, 256, 0, 2**63]
    assert sorted(user_key(u) for u in users) == [user_key(u) for u in sorted(users)]
    products = [65_536, 255, 2**32 - 1, 256]
    assert sorted(product_key(p) for p in products) == [product_key(p) for p in sorted(products)]
    assert user_key(256) == b"\0\0\0\0\0\0\x01\0" and product_key(256) == b"\0\0\x01\0"


def test_subject_keys_and_db_names():
    """Subjects map to their key kind; recs database names parse back."""
    assert subject_key("user", "7") == user_key(7)
    assert subject_key("product", "7") == product_key(7)
    assert subject_key("category", "électronique") == "électronique".encode("utf-8")
    assert subject_key("global", "all") == GLOBAL_KEY
    assert subject_key("segment", "country=DE|age_band=?") == b"country=DE|age_band=?"
    with pytest.raises(SnapshotFormatError):
        subject_key("shop", "1")
    assert parse_recs_db_name(recs_db_name("user", "als")) == ("user", "als")
    assert parse_recs_db_name(PRODUCTS_DB) is None


# --- manifest -----------------------------------------------------------------

def _manifest(**changes) -> Manifest:
    fields = dict(version="v1", created_at="2026-10-01T00:05:00Z", as_of="2026-10-01T00:00:00Z",
                  delta_versions={"events": 3}, databases={"recs/global/popular": 1},
                  model_versions={"popular": "popular-20261001T000000Z-abcd1234"},
                  files={DATA_FILE: {"bytes": 10, "sha256": "ab"}}, config_digest="cafe")
    return Manifest(**{**fields, **changes})


def test_manifest_json_round_trip():
    """to_json then from_json gives back an equal manifest."""
    manifest = _manifest()
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize("text, message", [
    (_manifest(format_version=2).to_json(), "snapshot format 2"),
    (_manifest(files={}).to_json(), "no data.mdb"),
    ('{"version": "v1"}', "unreadable"),
    (_manifest().to_json().replace('"version"', '"surprise": 1, "version"'), "unreadable"),
    ("not json", "unreadable"),
], ids=["format-version", "no-data-file", "missing-fields", "unknown-field", "not-json"])
def test_manifest_rejected(text, message):
    """A wrong format version, no data.mdb entry or unreadable JSON raises SnapshotFormatError."""
    with pytest.raises(SnapshotFormatError, match=message):
        Manifest.from_json(text)


# --- writer and publishing --------------------------------------------------------

def _build(root: Path, version: str) -> Path:
    """A finished snapshot: 2 global/user lists (one user key written twice), 2 products."""
    with SnapshotWriter(root, version, map_size_bytes=MAP_SIZE) as writer:
        writer.put(recs_db_name("global", "popular"), GLOBAL_KEY, pack_ranked_list([4, 5], [2.0, 1.0]))
        writer.put(recs_db_name("user", "popular"), user_key(256), pack_ranked_list([9], [0.5]))
        writer.put(recs_db_name("user", "popular"), user_key(1), pack_ranked_list([8], [0.5]))
        writer.put(recs_db_name("user", "popular"), user_key(1), pack_ranked_list([1, 2], [0.5, 0.25]))
        writer.put(PRODUCTS_DB, product_key(4), pack_product("a", 1.0, True))
        writer.put(PRODUCTS_DB, product_key(5), pack_product("b", None, False))
        return writer.finish(Manifest(version="", created_at="2026-10-01T00:05:00Z", as_of="2026-10-01T00:00:00Z"))


def test_writer_and_publish(tmp_path: Path):
    """publish points CURRENT at the new version whose manifest counts rows and verifies."""
    path = _build(tmp_path, "v1")
    assert path == tmp_path / "v1" and read_current_version(tmp_path) is None
    publish(tmp_path, "v1")
    assert read_current_version(tmp_path) == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "v1"]
    manifest = verify_snapshot_dir(path)
    assert manifest.version == "v1"
    assert manifest.databases == {"products": 2, "recs/global/popular": 1, "recs/user/popular": 2}
    assert manifest.files[DATA_FILE]["bytes"] == (path / DATA_FILE).stat().st_size
    assert sorted(p.name for p in path.iterdir()) == [DATA_FILE, MANIFEST_FILE]


def test_written_records_read_back_in_key_order(tmp_path: Path):
    """LMDB holds the last write of a repeated key and iterates user keys numerically."""
    path = _build(tmp_path, "v1")
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=8, subdir=True)
    try:
        users = env.open_db(recs_db_name("user", "popular").encode())
        with env.begin(db=users) as txn:
            records = [(int.from_bytes(k, "big"), unpack_ranked_list(v)) for k, v in txn.cursor()]
    finally:
        env.close()
    assert records == [(1, ((1, 2), (0.5, 0.25))), (256, ((9,), (0.5,)))]


def test_verify_detects_changed_or_truncated_data(tmp_path: Path):
    """Flipping one byte fails the checksum; truncating fails the size check."""
    path = _build(tmp_path, "v1")
    data = bytearray((path / DATA_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / DATA_FILE).write_bytes(bytes(data))
    with pytest.raises(SnapshotFormatError, match="checksum mismatch"):
        verify_snapshot_dir(path)
    assert verify_snapshot_dir(path, check_checksums=False).version == "v1"
    (path / DATA_FILE).write_bytes(bytes(data[:-4096]))
    with pytest.raises(SnapshotFormatError, match="manifest says"):
        verify_snapshot_dir(path, check_checksums=False)


def test_verify_detects_a_renamed_version(tmp_path: Path):
    """A folder whose name differs from the manifest's version is refused."""
    _build(tmp_path, "v1").rename(tmp_path / "v2")
    with pytest.raises(SnapshotFormatError, match="manifest names version 'v1'"):
        verify_snapshot_dir(tmp_path / "v2")


def test_failed_build_leaves_nothing_and_current_unchanged(tmp_path: Path):
    """An exception inside the writer's block removes its folder; CURRENT still names the old version."""
    _build(tmp_path, "v1")
    publish(tmp_path, "v1")
    with pytest.raises(RuntimeError, match="boom"):
        with SnapshotWriter(tmp_path, "v2", map_size_bytes=MAP_SIZE) as writer:
            writer.put(PRODUCTS_DB, product_key(1), pack_product("a", 1.0, True))
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "v1"]
    assert read_current_version(tmp_path) == "v1"


def test_publish_of_unfinished_version_raises(tmp_path: Path):
    """A version still building (or absent) cannot be published; CURRENT is not written."""
    writer = SnapshotWriter(tmp_path, "v1", map_size_bytes=MAP_SIZE)
    try:
        with pytest.raises(FileNotFoundError):
            publish(tmp_path, "v1")
        with pytest.raises(FileNotFoundError):
            publish(tmp_path, ".building-v1")
        assert read_current_version(tmp_path) is None
    finally:
        writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_or_existing_versions(tmp_path: Path):
    """Empty, nested or hidden version names and an existing version raise."""
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            SnapshotWriter(tmp_path, bad)
    _build(tmp_path, "v1")
    with pytest.raises(FileExistsError):
        SnapshotWriter(tmp_path, "v1")


def test_prune_keeps_newest_and_current(tmp_path: Path):
    """Publishing an older version with keep_versions=2 keeps it and the two newest."""
    versions = [f"2026100{i}T000000000000Z" for i in range(1, 6)]
    for version in versions:
        _build(tmp_path, version)
    publish(tmp_path, versions[1], keep_versions=2)
    assert list_versions(tmp_path) == [versions[1], versions[3], versions[4]]
    assert prune(tmp_path, 1) == [versions[3]]
    assert list_versions(tmp_path) == [versions[1], versions[4]]


def test_remove_abandoned_builds(tmp_path: Path):
    """Hidden .building-* folders go; finished versions stay."""
    _build(tmp_path, "v1")
    crashed = tmp_path / ".building-v2"
    crashed.mkdir()
    (crashed / DATA_FILE).write_bytes(b"half")
    assert remove_abandoned_builds(tmp_path) == [".building-v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]
    assert remove_abandoned_builds(tmp_path / "absent") == []


def test_new_version_sorts_by_time():
    """Version names compare in creation order."""
    from datetime import datetime, timezone

    earlier = new_version(datetime(2026, 10, 1, 6, 15, 30, 5, tzinfo=timezone.utc))
    later = new_version(datetime(2026, 10, 1, 6, 15, 30, 6, tzinfo=timezone.utc))
    assert earlier == "20261001T061530000005Z" and earlier < later
