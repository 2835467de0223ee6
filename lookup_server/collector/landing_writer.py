"""Durable appends to the landing zone, published by rename.

A ``LandingWriter`` owns one hidden file per (process, table),
``<landing>/<table>/.collector-<host>-<pid>-<seq>.jsonl.open``. The batch ingest
ignores names starting with ``.``, so it never reads a file that is still growing.
Each request's rows go in as ONE write of the joined lines, then flush and fsync,
before the request is answered: an acknowledged row is on disk.

The file is published (fsync, close, rename to the visible
``collector-<host>-<pid>-<seq>.jsonl``, fsync of the folder) when it reaches
``rotate_bytes`` or is ``rotate_seconds`` old. That is checked on every append and by
one daemon thread per process (``every few seconds``), so an idle worker still
publishes, and ``close_all_writers()`` publishes at process exit (atexit, gunicorn's
worker_exit hook).

``<seq>`` is the file's creation time in milliseconds, made strictly increasing per
writer: a recycled pid never recreates the name of an earlier file, which the
ingest's file-stream checkpoint would take for an already-read file.

``recover()`` publishes the hidden files a dead process left behind: it cuts each
after its last complete line (a crash mid-write leaves at most a partial, never
acknowledged, last line) and renames it visible. A file is only ever published once
(rename), so recovery never duplicates rows.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

HIDDEN_PREFIX = ".collector-"
VISIBLE_PREFIX = "collector-"
OPEN_SUFFIX = ".jsonl.open"
VISIBLE_SUFFIX = ".jsonl"
RECOVERY_LOCK = ".collector-recovery.lock"
# .collector-<host>-<pid>-<seq>.jsonl.open; the host may itself contain '-'.
_HIDDEN_NAME = re.compile(r"\.collector-(?P<host>.+)-(?P<pid>[0-9]+)-(?P<seq>[0-9]+)\.jsonl\.open")

DEFAULT_ROTATE_BYTES = 64 << 20
DEFAULT_ROTATE_SECONDS = 60.0


def host_label() -> str:
    """This host's name, reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def encode_rows(rows: Iterable[dict]) -> bytes:
    """Rows as JSON lines (compact, UTF-8, newline after each)."""
    return b"".join(json.dumps(row, ensure_ascii=False, separators=(",", ":"),
                               allow_nan=False).encode("utf-8") + b"\n" for row in rows)


def fsync_dir(folder: Path) -> None:
    """Make a create/rename in ``folder`` survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LandingWriter:
    """Appends JSON-line batches to this process's hidden file in ``folder``.

    Thread-safe; fork-safe in that a writer does nothing in a process other than
    the one that created it (a forked child makes its own).
    """

    def __init__(self, folder: Path | str, rotate_bytes: int = DEFAULT_ROTATE_BYTES,
                 rotate_seconds: float = DEFAULT_ROTATE_SECONDS,
                 clock: Callable[[], float] = time.monotonic, host: str | None = None,
                 auto_rotate: bool = True) -> None:
        """``auto_rotate=False`` leaves this writer out of the rotation thread's checks
        (tests that drive ``clock`` themselves); it is still published at exit."""
        if rotate_bytes < 1 or not rotate_seconds > 0:
            raise ValueError("rotate_bytes must be >= 1 and rotate_seconds > 0")
        self.folder = Path(folder).absolute()
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.clock = clock
        self.auto_rotate = auto_rotate
        self.host = host or host_label()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._last_seq = 0
        _register(self)

    # --- public --------------------------------------------------------------
    @property
    def open_path(self) -> Path | None:
        """The hidden file currently being appended to, if any."""
        return self._path

    def append(self, rows: Sequence[dict]) -> None:
        """Write ``rows`` durably (one write, fsync) or raise OSError having written
        nothing that could later become visible."""
        if not rows:
            return
        data = encode_rows(rows)
        with self._lock:
            self._check_owner()
            if self._fd is not None and self._due():
                self._publish_quietly_locked()  # a failure there must not refuse this batch
            if self._fd is None:
                self._open_locked()
            start = self._size
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError:
                self._abandon_locked(start)
                raise
            self._size = start + len(data)
            if self._size >= self.rotate_bytes:
                self._publish_quietly_locked()

    def maybe_rotate(self) -> bool:
        """Publish the current file if it is due; True if one was published."""
        if self.pid != os.getpid():
            return False
        with self._lock:
            if self._fd is None or not self._due():
                return False
            return self._publish_quietly_locked()

    def close(self) -> None:
        """Publish the current file (if any). Idempotent; a no-op in a forked child."""
        if self.pid != os.getpid():
            return
        with self._lock:
            if self._fd is not None:
                self._publish_quietly_locked()

    # --- internals (hold self._lock) -------------------------------------------
    def _check_owner(self) -> None:
        if self.pid != os.getpid():
            raise RuntimeError("a LandingWriter cannot be used after fork; create one per process")

    def _due(self) -> bool:
        return (self._size >= self.rotate_bytes
                or self.clock() - self._opened_at >= self.rotate_seconds)

    def _open_locked(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        seq = max(self._last_seq + 1, time.time_ns() // 1_000_000)
        path = self.folder / f"{HIDDEN_PREFIX}{self.host}-{self.pid}-{seq}{OPEN_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fsync_dir(self.folder)  # the new name itself must survive a crash
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        self._fd, self._path, self._size, self._last_seq = fd, path, 0, seq
        self._opened_at = self.clock()
        _live_paths.add(path)
        _ensure_rotator()

    def _publish_locked(self) -> None:
        """fsync, close, rename visible, fsync the folder; an empty file is removed."""
        fd, path = self._fd, self._path
        assert fd is not None and path is not None
        self._fd = self._path = None
        _live_paths.discard(path)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._size == 0:
            path.unlink(missing_ok=True)
        else:
            os.rename(path, visible_name(path))
        fsync_dir(self.folder)

    def _publish_quietly_locked(self) -> bool:
        """Publish; a failure is logged, and the hidden file is left to recovery
        (its rows are durable already, so nothing acknowledged is lost)."""
        path = self._path
        try:
            self._publish_locked()
            return True
        except OSError:
            log.exception("could not publish %s; recovery will publish it", path)
            return False

    def _abandon_locked(self, good_size: int) -> None:
        """A failed write: cut the file back to its acknowledged rows, then stop using
        it (publish it if possible, else leave it to recovery)."""
        fd, path = self._fd, self._path
        try:
            os.ftruncate(fd, good_size)
            os.fsync(fd)
        except OSError:
            log.exception("could not cut %s back to %d bytes", path, good_size)
        self._size = good_size
        self._publish_quietly_locked()


def visible_name(hidden: Path) -> Path:
    """``.collector-x.jsonl.open`` -> ``collector-x.jsonl`` in the same folder."""
    name = hidden.name
    if not (name.startswith(HIDDEN_PREFIX) and name.endswith(OPEN_SUFFIX)):
        raise ValueError(f"not a collector file in progress: {hidden}")
    return hidden.with_name(name[1:-len(OPEN_SUFFIX)] + VISIBLE_SUFFIX)


def _write_all(fd: int, data: bytes) -> None:
    """One write call for the batch; loops only if the kernel writes it partially."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# --- recovery -------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def recover(folder: Path | str, recover_all: bool = False, host: str | None = None) -> list[Path]:
    """Publish the hidden files of dead processes in ``folder``; return the new visible paths.

    A file is recovered when it belongs to this host and its pid is not alive (or is
    this process's pid but not a file this process has open), or, with
    ``recover_all`` (the gunicorn master before it starts workers), whatever host or
    pid wrote it. Files of other hosts are otherwise left alone: their pid means
    nothing here. Concurrent recoveries (workers starting together) take turns on a
    lock file.
    """
    folder = Path(folder).absolute()
    if not folder.is_dir():
        return []
    host = host or host_label()
    me = os.getpid()
    published: list[Path] = []
    with _recovery_lock(folder):
        for path in sorted(folder.glob(f"{HIDDEN_PREFIX}*{OPEN_SUFFIX}")):
            match = _HIDDEN_NAME.fullmatch(path.name)
            if match is None or path in _live_paths:
                continue
            pid = int(match["pid"])
            dead = match["host"] == host and (pid == me or not pid_alive(pid))
            if not (recover_all or dead):
                continue
            try:
                target = _publish_recovered(path)
            except FileNotFoundError:
                continue  # published meanwhile by another process
            if target is not None:
                published.append(target)
                log.warning("recovered %s -> %s", path.name, target.name)
    return published


def _publish_recovered(path: Path) -> Path | None:
    """Cut ``path`` after its last newline, fsync, rename visible (or remove if empty)."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        keep = _end_of_last_line(fh, size)
        if keep != size:
            log.warning("%s: dropping %d bytes of an unfinished line", path.name, size - keep)
            fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    if keep == 0:
        path.unlink()
        fsync_dir(path.parent)
        return None
    target = visible_name(path)
    os.rename(path, target)
    fsync_dir(path.parent)
    return target


def _end_of_last_line(fh, size: int, chunk: int = 1 << 16) -> int:
    """Offset just after the last b'\\n' of the file (0 if there is none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        fh.seek(start)
        block = fh.read(end - start)
        index = block.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        end = start
    return 0


class _recovery_lock:
    """An exclusive flock on ``<folder>/.collector-recovery.lock`` (a hidden name)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RECOVERY_LOCK

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


# --- process-wide: live writers, the rotation thread, exit ------------------------

_writers: "weakref.WeakSet[LandingWriter]" = weakref.WeakSet()
_live_paths: set[Path] = set()  # hidden files open in this process: never "recovered"
_rotator_guard = threading.Lock()
_rotator_pid: int | None = None
ROTATOR_INTERVAL_SECONDS = 2.0


def _register(writer: LandingWriter) -> None:
    _writers.add(writer)


def close_all_writers() -> None:
    """Publish every open file of this process (atexit, gunicorn worker_exit)."""
    for writer in list(_writers):
        writer.close()


def rotate_due_writers() -> None:
    """One pass of the rotation thread: publish every file that is due."""
    for writer in list(_writers):
        if not writer.auto_rotate:
            continue
        try:
            writer.maybe_rotate()
        except Exception:  # the thread must survive anything
            log.exception("rotation check failed for %s", writer.folder)


def _ensure_rotator() -> None:
    """Start this process's rotation thread once (threads do not survive fork)."""
    global _rotator_pid
    with _rotator_guard:
        if _rotator_pid == os.getpid():
            return
        _rotator_pid = os.getpid()
        threading.Thread(target=_rotate_forever, name="landing-rotator", daemon=True).start()


def _rotate_forever() -> None:
    while True:
        time.sleep(ROTATOR_INTERVAL_SECONDS)
        rotate_due_writers()


atexit.register(close_all_writers)


def _after_fork_in_child() -> None:
    # The parent's writers and files stay the parent's: the child neither publishes
    # them at exit nor rotates them, and gets fresh locks (one may have been held).
    global _rotator_pid, _rotator_guard
    _writers.clear()
    _live_paths.clear()
    _rotator_pid = None
    _rotator_guard = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
