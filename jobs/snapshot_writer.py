"""Write an LMDB snapshot in a hidden folder, then publish it atomically.

No Spark here: the builder (jobs/build_snapshot.py) appends packed records in
key order, and tests write small snapshots directly.

Publishing is two renames: ``.building-<v>`` -> ``<v>`` once everything in it is
fsynced, then ``CURRENT.tmp`` -> ``CURRENT``. A reader that follows CURRENT
therefore never sees a half-written version; a crash leaves only a hidden folder,
which the next build removes.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import lmdb

from schemas.snapshot import (
    CURRENT_POINTER, DATA_FILE, MANIFEST_FILE, Manifest, file_digest, fsync_dir,
    read_current_version,
)

log = logging.getLogger(__name__)

BUILDING_PREFIX = ".building-"
COMMIT_EVERY = 50_000  # puts per write transaction: bounds the dirty pages held in memory


class SnapshotWriteError(RuntimeError):
    """LMDB could not write the snapshot to disk. It reports a full disk (a short
    write) as a bare "Input/output error", so the message says how much space is left."""


class SnapshotWriter:
    """Collects records into a fresh LMDB environment under ``root/.building-<version>``.

    Use as a context manager; leaving it with an exception deletes the partial folder.
    """

    def __init__(self, root: Path, version: str, map_size_bytes: int = 64 << 30):
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"bad snapshot version {version!r}")
        self.root = Path(root)
        self.version = version
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / version).exists():
            raise FileExistsError(f"snapshot {version} already exists in {self.root}")
        self.tmp_dir = self.root / f"{BUILDING_PREFIX}{version}"
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir()
        # sync=False: one fsync at the end instead of one per commit; the folder is
        # not visible to readers until that final fsync and rename.
        self._env = lmdb.open(str(self.tmp_dir), map_size=map_size_bytes, max_dbs=256,
                              subdir=True, sync=False, metasync=False, readahead=False)
        self._dbs: dict[str, object] = {}
        self._last_keys: dict[str, bytes] = {}  # per database, the greatest key put so far
        self.row_counts: Counter[str] = Counter()
        self._txn = self._env.begin(write=True)
        self._pending = 0

    def _db(self, name: str):
        db = self._dbs.get(name)
        if db is None:
            db = self._env.open_db(name.encode("utf-8"), txn=self._txn, create=True)
            self._dbs[name] = db
        return db

    def put(self, db_name: str, key: bytes, value: bytes) -> None:
        """Store one record; a repeated key in the same database replaces the earlier one."""
        db = self._db(db_name)
        last = self._last_keys.get(db_name)
        if last is None or key > last:
            # Above every key stored: MDB_APPEND fills each page, where an ordinary put
            # splits a full page in half (records arriving in key order then leave every
            # page half empty: ~1.4 KB instead of ~1 KB per 100-item list).
            self._txn.put(key, value, db=db, append=True)
            self._last_keys[db_name] = key
            self.row_counts[db_name] += 1
            self._commit_every()
            return
        # put(overwrite=True) answers True for a replacement too, which would count a
        # repeated key twice in the manifest; only a new key adds a row.
        if self._txn.put(key, value, db=db, overwrite=False):
            self.row_counts[db_name] += 1
        else:
            self._txn.put(key, value, db=db, overwrite=True)
        self._commit_every()

    def append_sorted(self, db_name: str, keys: list[bytes], values: list[bytes]) -> None:
        """Store records whose keys are strictly increasing (``jobs.snapshot_packing``
        gives them so): one C-level ``putmulti`` appends them all when they all sort
        after the database's greatest key, else each goes through ``put``."""
        if not keys:
            return
        last = self._last_keys.get(db_name)
        if last is not None and keys[0] <= last:
            for key, value in zip(keys, values):
                self.put(db_name, key, value)
            return
        _consumed, added = self._txn.cursor(db=self._db(db_name)).putmulti(zip(keys, values), append=True)
        self._last_keys[db_name] = keys[-1]
        self.row_counts[db_name] += added
        self._pending += len(keys) - 1
        self._commit_every()

    def _commit_every(self) -> None:
        self._pending += 1
        if self._pending >= COMMIT_EVERY:
            with self._writing_to_disk("commit"):
                self._txn.commit()
            self._txn = self._env.begin(write=True)
            self._pending = 0

    @contextmanager
    def _writing_to_disk(self, step: str):
        """Turn LMDB's error for a failed write (pages reach the disk at commit and sync)
        into one that names the snapshot, its folder and the space left there."""
        try:
            yield
        except lmdb.Error as exc:
            raise SnapshotWriteError(f"snapshot {self.version}: LMDB {step} in {self.tmp_dir} failed "
                                     f"({exc}); {_space_left(self.tmp_dir)}") from exc

    def finish(self, manifest: Manifest, extra_files: Mapping[str, bytes] | None = None) -> Path:
        """Commit, fsync, write ``extra_files`` and the manifest and move the folder to ``root/<version>``.

        Fills ``manifest.version``, ``databases`` and ``files``; returns the final path.
        """
        with self._writing_to_disk("commit"):
            self._txn.commit()
        with self._writing_to_disk("sync"):
            self._env.sync(True)
        self._env.close()
        lock_file = self.tmp_dir / "lock.mdb"
        if lock_file.exists():  # readers open with lock=False; the lock file is not part of a snapshot
            lock_file.unlink()
        manifest.version = self.version
        manifest.databases = dict(sorted(self.row_counts.items()))
        manifest.files = {DATA_FILE: file_digest(self.tmp_dir / DATA_FILE)}
        for name, content in (extra_files or {}).items():
            _write_durably(self.tmp_dir / name, content)
            manifest.files[name] = file_digest(self.tmp_dir / name)
        _write_durably(self.tmp_dir / MANIFEST_FILE, manifest.to_json())
        _fsync_file(self.tmp_dir / DATA_FILE)
        fsync_dir(self.tmp_dir)
        final = self.root / self.version
        os.rename(self.tmp_dir, final)
        fsync_dir(self.root)
        log.info("snapshot %s written: %s", self.version,
                 ", ".join(f"{k}={v}" for k, v in manifest.databases.items()))
        return final

    def abort(self) -> None:
        try:
            self._txn.abort()
            self._env.close()
        finally:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "SnapshotWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.tmp_dir.exists():
            self.abort()


def _space_left(folder: Path) -> str:
    """Free space on ``folder``'s filesystem, and the file size limit when one is set:
    the two things that make a growing file's write fail."""
    usage = shutil.disk_usage(folder)
    text = f"{usage.free / 1e6:.1f} MB free of {usage.total / 1e6:.1f} MB on its filesystem"
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY:
        text += f", file size limit (ulimit -f) {limit / 1e6:.1f} MB"
    return text


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _write_durably(path: Path, content: str | bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(content.encode() if isinstance(content, str) else content)
        fh.flush()
        os.fsync(fh.fileno())


def publish(root: Path, version: str, keep_versions: int = 3) -> None:
    """Point ``root/CURRENT`` at ``version`` atomically, then prune old versions.

    Keeps the ``keep_versions`` newest versions (by name, which sorts by time),
    always including the one just published.
    """
    root = Path(root)
    if not (root / version / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"no finished snapshot {version} in {root}")
    tmp = root / f"{CURRENT_POINTER}.tmp"
    _write_durably(tmp, version + "\n")
    os.replace(tmp, root / CURRENT_POINTER)
    fsync_dir(root)
    log.info("published snapshot %s", version)
    prune(root, keep_versions)


def list_versions(root: Path) -> list[str]:
    """Finished versions in ``root``, oldest first."""
    return sorted(p.name for p in Path(root).iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file())


def prune(root: Path, keep_versions: int) -> list[str]:
    """Delete all but the newest ``keep_versions`` finished versions (never CURRENT's);
    return what was removed."""
    current = read_current_version(root)
    versions = list_versions(root)
    keep = set(versions[-max(keep_versions, 1):]) | {current}
    removed = [v for v in versions if v not in keep]
    for version in removed:
        shutil.rmtree(Path(root) / version, ignore_errors=True)
    return removed


def remove_abandoned_builds(root: Path) -> list[str]:
    """Delete ``.building-*`` folders left by a crashed build. Call only when no other
    build runs on ``root`` (the scheduler runs one build at a time)."""
    leftovers = sorted(Path(root).glob(f"{BUILDING_PREFIX}*")) if Path(root).is_dir() else []
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    return [p.name for p in leftovers]


def new_version(now: datetime | None = None) -> str:
    """A version name that sorts by creation time: ``20261125T061530123456Z`` (UTC, microseconds)."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
