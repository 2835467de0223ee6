"""The snapshot a worker serves, following ``<root>/CURRENT``.

A daemon thread checks CURRENT every ``reload_interval_seconds``; a newly named
version is opened and verified on that thread, never on a request, and swapped in
by one attribute assignment. Requests read ``reader`` once into a local variable and
use only that, so a swap mid-request cannot mix two versions, and the old reader
(with its LMDB environment) is freed when the last request holding it returns.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from schemas.snapshot import CURRENT_POINTER, DATA_FILE, MANIFEST_FILE, read_current_version

from lookup_server.snapshot_reader import SnapshotOpenError, SnapshotReader, open_snapshot

log = logging.getLogger(__name__)


class CurrentSnapshot:
    """Holds this process's current ``SnapshotReader`` (None until one is verified)."""

    def __init__(self, root: Path, reload_interval_seconds: float, verify_checksums: bool):
        self.root = Path(root)
        self.reload_interval_seconds = reload_interval_seconds
        self.verify_checksums = verify_checksums
        self.reader: SnapshotReader | None = None
        self.rejected_count = 0  # versions refused since start
        # The same by reason (REJECTION_REASONS), for metrics. Replaced, never changed
        # in place: other threads read it while the watcher refuses a version.
        self.rejected_by_reason: dict[str, int] = {}
        self.last_rejection: str | None = None
        # What the last refused folder looked like: it is not retried (nor logged
        # again every interval) until CURRENT or the folder's files change.
        self._rejected_fingerprint: tuple | None = None
        self._refresh_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._first_check = threading.Event()  # set once this process's watcher has checked CURRENT
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._closed = False

    # --- background watcher -------------------------------------------------

    def ensure_started(self) -> None:
        """Start the watcher thread in this process unless it runs already.

        Cheap enough to call on every request. The pid check matters when the app
        was built before a fork (gunicorn preload_app=True): threads do not survive
        fork and an LMDB environment must not be used across one.
        """
        pid = os.getpid()
        if self._owner_pid == pid:
            return
        with self._start_lock:
            if self._owner_pid == pid or self._closed:
                return
            if self._owner_pid is not None:
                self.reader = None
                self._refresh_lock = threading.Lock()  # may have been held by the parent's thread
            self._stop = threading.Event()
            self._first_check = threading.Event()
            self._thread = threading.Thread(target=self._watch, args=(self._stop, self._first_check),
                                            name="snapshot-watcher", daemon=True)
            self._thread.start()
            self._owner_pid = pid

    def _watch(self, stop: threading.Event, first_check: threading.Event) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # the thread must outlive any one bad check
                log.exception("checking %s for a new snapshot failed", self.root)
            first_check.set()
            if stop.wait(self.reload_interval_seconds):
                return

    def wait_first_check(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until this process's watcher has checked
        CURRENT once (and loaded what it names, or refused it); True if it has."""
        return self._first_check.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the watcher and drop the reader (for tests; a worker just exits)."""
        with self._start_lock:
            self._closed = True
            self._stop.set()
            thread, self._thread, self._owner_pid = self._thread, None, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.reader = None

    # --- one check ----------------------------------------------------------

    def refresh(self) -> bool:
        """Check CURRENT once; open, verify and swap in a newly named version.

        Returns True when it swapped. A version that cannot be served is logged,
        counted and skipped; the reader in service stays.
        """
        with self._refresh_lock:
            version = read_current_version(self.root)
            serving = self.reader
            if version is None or (serving is not None and serving.version == version):
                return False
            path = self.root / version
            fingerprint = _fingerprint(path)
            if fingerprint == self._rejected_fingerprint:
                return False
            try:
                if "/" in version or version.startswith("."):
                    raise SnapshotOpenError(f"{CURRENT_POINTER} names no version folder: {version!r}",
                                            "bad_pointer")
                reader = open_snapshot(path, self.verify_checksums)
            except SnapshotOpenError as exc:
                self._reject(fingerprint, exc.reason, str(exc), serving)
                return False
            except Exception as exc:  # an LMDB or OS failure nobody foresaw: still not fatal
                log.debug("opening %s failed", path, exc_info=True)
                self._reject(fingerprint, "error", f"{version}: {type(exc).__name__}: {exc}", serving)
                return False
            self.reader = reader
            self._rejected_fingerprint = None
            log.info("serving snapshot %s (was %s)", reader.version,
                     serving.version if serving else "none")
            return True

    def _reject(self, fingerprint: tuple, reason: str, message: str, serving: SnapshotReader | None) -> None:
        self.rejected_count += 1
        self.rejected_by_reason = {**self.rejected_by_reason,
                                   reason: self.rejected_by_reason.get(reason, 0) + 1}
        self.last_rejection = message
        self._rejected_fingerprint = fingerprint
        log.warning("rejected snapshot %s (%s), still serving %s: %s", fingerprint[0], reason,
                    serving.version if serving else "nothing", message)


def _fingerprint(path: Path) -> tuple:
    """Name plus identity, size and mtime of a version folder's files (None when missing)."""
    def stat(name: str):
        try:
            st = (path / name).stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    return path.name, stat(MANIFEST_FILE), stat(DATA_FILE)
