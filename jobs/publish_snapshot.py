"""Publish a built snapshot to where the lookup servers read it.

``jobs.build_snapshot`` writes ``<data-dir>/snapshots/<version>/`` and points that
folder's ``CURRENT`` at it. This job ships that version to the lookup servers'
snapshot folder, ``[publish] target`` in ``conf/jobs.toml``:

- a folder (relative to the data dir unless absolute; local, NFS or any mount): the
  files are copied into ``.incoming-<version>/``, fsynced and verified (manifest and
  SHA-256), the folder is renamed to ``<version>/``, and only then ``CURRENT`` is
  replaced by rename. A server never sees a half-copied version.
- an object-store URL (``s3a://bucket/prefix`` or ``s3://``, reached as
  ``conf/storage.toml`` says; other schemes pyarrow has a filesystem for): the data
  file is uploaded first, the manifest after it, each checked by size, and the
  ``CURRENT`` object last (a PUT replaces an object atomically). Each lookup host's
  ``python -m lookup_server.sync`` pulls ``CURRENT``, then the version it names, into
  its local snapshot folder.

Re-publishing a version that is already at the target (a re-run of the same
interval) verifies it and points ``CURRENT`` at it again; ``--version`` publishes an
older built version, which is how to roll back. The newest ``keep_versions`` versions
(plus the one in service) stay at the target. No Spark here; ``--as-of`` is only
compared with the manifest's, so a publish that picked up another run's build says so.

Run: ``python -m jobs.publish_snapshot --help`` or ``spark-submit jobs/publish_snapshot.py --help``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

import pyarrow.fs as pafs

from schemas.settings import load_conf
from schemas.storage import Location
from schemas.snapshot import (
    CURRENT_POINTER, DATA_FILE, MANIFEST_FILE, Manifest, SnapshotFormatError, fsync_dir, read_current_version,
    verify_snapshot_dir,
)

from jobs.cli import configure_logging, data_paths, job_parser, parse_as_of

log = logging.getLogger(__name__)

INCOMING_PREFIX = ".incoming-"
LOCK_FILE = "lock.mdb"  # an LMDB lock file is never part of a snapshot


class NothingToPublishError(RuntimeError):
    """The build folder has no CURRENT and no --version was given."""


class SnapshotTarget(Protocol):
    """Where lookup servers read snapshots: versions side by side and a CURRENT pointer."""

    location: str

    def current(self) -> str | None: ...

    def has_valid(self, version: str) -> bool: ...

    def upload(self, source: Path, version: str) -> None: ...

    def point_current_at(self, version: str) -> None: ...

    def prune(self, keep_versions: int) -> list[str]: ...


def snapshot_files(source: Path) -> list[Path]:
    """The files of a built snapshot folder, the manifest last (it is what makes a version complete)."""
    files = [p for p in sorted(source.iterdir()) if p.is_file() and p.name != LOCK_FILE]
    return sorted(files, key=lambda p: p.name == MANIFEST_FILE)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _newest(versions: list[str], current: str | None, keep_versions: int) -> set[str]:
    return set(sorted(versions)[-max(keep_versions, 1):]) | ({current} if current else set())


class LocalFolderTarget:
    """A snapshot folder on this machine (or a mount), as ``lookup_server`` reads it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)

    def current(self) -> str | None:
        return read_current_version(self.root)

    def has_valid(self, version: str) -> bool:
        path = self.root / version
        if not path.is_dir():
            return False
        try:
            verify_snapshot_dir(path)
        except SnapshotFormatError as exc:
            log.warning("%s is at the target but broken (%s): copying it again", path, exc)
            return False
        return True

    def upload(self, source: Path, version: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        incoming = self.root / f"{INCOMING_PREFIX}{version}"
        shutil.rmtree(incoming, ignore_errors=True)
        # The copy lands in .incoming-<v>/<v>/ so that verify_snapshot_dir can check the
        # folder under its real name before it becomes visible.
        staged = incoming / version
        staged.mkdir(parents=True)
        try:
            for path in snapshot_files(source):
                shutil.copyfile(path, staged / path.name)
                _fsync_file(staged / path.name)
            fsync_dir(staged)
            verify_snapshot_dir(staged)
            final = self.root / version
            if final.exists():  # a broken earlier copy (has_valid said so)
                shutil.rmtree(final)
            os.rename(staged, final)
            fsync_dir(self.root)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def point_current_at(self, version: str) -> None:
        tmp = self.root / f"{CURRENT_POINTER}.tmp"
        with open(tmp, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / CURRENT_POINTER)
        fsync_dir(self.root)

    def prune(self, keep_versions: int) -> list[str]:
        versions = [p.name for p in self.root.iterdir()
                    if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()]
        keep = _newest(versions, self.current(), keep_versions)
        removed = sorted(v for v in versions if v not in keep)
        for version in removed:
            shutil.rmtree(self.root / version, ignore_errors=True)
        for leftover in self.root.glob(f"{INCOMING_PREFIX}*"):  # a crashed copy
            shutil.rmtree(leftover, ignore_errors=True)
        return removed


class ObjectStoreTarget:
    """A prefix in an object store (``s3a://``/``s3://`` as conf/storage.toml sets it up,
    or any URL pyarrow has a filesystem for), written through pyarrow."""

    def __init__(self, root: Location):
        self.root = root
        self.location = str(root)

    def current(self) -> str | None:
        try:
            return (self.root / CURRENT_POINTER).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _size(self, location: Location) -> int | None:
        fs, path = location.filesystem()
        return fs.get_file_info(path).size

    def has_valid(self, version: str) -> bool:
        try:
            manifest = Manifest.from_json((self.root / version / MANIFEST_FILE).read_text())
        except (FileNotFoundError, SnapshotFormatError):
            return False
        return all(self._size(self.root / version / name) == meta["bytes"] for name, meta in manifest.files.items())

    def upload(self, source: Path, version: str) -> None:
        manifest = verify_snapshot_dir(source, check_checksums=False)
        for path in snapshot_files(source):  # the manifest last: a version without one is not complete
            remote = self.root / version / path.name
            fs, remote_path = remote.filesystem()
            pafs.copy_files(str(path), remote_path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
            expected = manifest.files.get(path.name, {}).get("bytes", path.stat().st_size)
            if self._size(remote) != expected:
                raise OSError(f"{remote}: {self._size(remote)} bytes after upload, expected {expected}")

    def point_current_at(self, version: str) -> None:
        (self.root / CURRENT_POINTER).write_text(version + "\n")  # one PUT: replaced whole

    def prune(self, keep_versions: int) -> list[str]:
        versions = [v for v in self.root.children() if not v.startswith(".") and v != CURRENT_POINTER
                    and (self.root / v / MANIFEST_FILE).exists()]
        keep = _newest(versions, self.current(), keep_versions)
        removed = sorted(v for v in versions if v not in keep)
        for version in removed:
            (self.root / version).remove_tree()
        return removed


def open_target(target: str | Location, data_dir: Location) -> SnapshotTarget:
    """A folder for a path or ``file://`` (relative to ``data_dir`` unless absolute), else an object store."""
    location = Location.of(target, base=Location.of(data_dir))
    return LocalFolderTarget(location.local_path) if location.is_local else ObjectStoreTarget(location)


def publish_snapshot(built: "Path | Location", target: SnapshotTarget, version: str | None = None,
                     keep_versions: int = 3) -> dict:
    """Ship ``built/<version>`` (default: the one ``built/CURRENT`` names) to ``target``
    and point the target's CURRENT at it; return what happened."""
    built = Location.of(built)
    if built.is_local:
        return _publish_local(built.local_path, target, version, keep_versions)
    # Builds on an object store (an s3a:// data dir) come here first, to be verified whole.
    version = version or ObjectStoreTarget(built).current()
    if not version:
        raise NothingToPublishError(f"nothing to publish: {built} has no {CURRENT_POINTER} (run build_snapshot first)")
    with tempfile.TemporaryDirectory(prefix="recsys-publish-") as tmp:
        (built / version).download_dir(Path(tmp) / version)
        return _publish_local(Path(tmp), target, version, keep_versions)


def _publish_local(built: Path, target: SnapshotTarget, version: str | None, keep_versions: int) -> dict:
    version = version or read_current_version(built)
    if not version:
        raise NothingToPublishError(f"nothing to publish: {built} has no {CURRENT_POINTER} (run build_snapshot first)")
    if not (built / version).is_dir():
        raise NothingToPublishError(f"nothing to publish: no version {version} in {built}")
    manifest = verify_snapshot_dir(built / version)  # never ship a snapshot the servers would refuse
    previous = target.current()
    copied = not target.has_valid(version)
    if copied:
        target.upload(built / version, version)
    target.point_current_at(version)
    removed = target.prune(keep_versions)
    log.info("published snapshot %s to %s (%s; was %s; pruned %s)", version, target.location,
             "copied" if copied else "already there", previous, removed or "nothing")
    return {"version": version, "as_of": manifest.as_of, "target": target.location, "previous": previous,
            "copied": copied, "bytes": manifest.files[DATA_FILE]["bytes"], "pruned": removed}


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="built version to publish (default: the one <data-dir>/snapshots/CURRENT "
                        "names); an older one rolls back")
    parser.add_argument("--target", help="folder or object-store URL (default: [publish] target in conf/jobs.toml)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = data_paths(settings, args.data_dir)
    target = open_target(args.target or settings["publish"]["target"], paths.root)
    result = publish_snapshot(paths.snapshots, target, args.version, settings["publish"]["keep_versions"])
    if args.as_of is not None and parse_as_of(result["as_of"]) != args.as_of:
        log.warning("published snapshot %s was built as of %s, not this run's %s: a later build got there first",
                    result["version"], result["as_of"], args.as_of.isoformat())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
