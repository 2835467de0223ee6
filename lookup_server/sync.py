"""Pull published snapshots from an object store onto this lookup host.

``python -m lookup_server.sync`` runs beside gunicorn on every lookup host. It polls
the ``CURRENT`` object under ``[sync] source`` (``s3://bucket/prefix``: where
``jobs.publish_snapshot`` uploads each version's files, its manifest, then CURRENT)
with a conditional GET: If-None-Match carries the ETag of the CURRENT last applied,
so while nothing new is published the store answers 304 and sends nothing. When CURRENT
names a version this host does not hold, the sync process

1. downloads the files its manifest lists into ``<root>/.incoming-<v>/<v>/`` (hidden:
   no CURRENT ever names it), the manifest last, each fsynced;
2. verifies them with ``schemas.snapshot.verify_snapshot_dir`` (manifest, sizes, SHA-256);
3. renames the folder to ``<root>/<v>/``, then replaces ``<root>/CURRENT`` by rename
   and fsyncs the folder: the workers' watcher threads pick it up as they do any
   publish (``lookup_server/current_snapshot.py``); the snapshot's ``policy.json``
   (the evaluation's verdict it was built with, if any) replaces the server's
   ``policy_file`` the same way;
4. keeps the newest ``keep_versions`` versions (by name, as the publisher does) and
   always the one in service.

A failed pull (store unreachable or hung, no CURRENT, CURRENT naming a missing
version, an object shorter than its manifest says, a checksum that does not match,
...) changes nothing the server reads: the host keeps serving its last verified
version, one WARNING line says why, ``recsys_sync_failures_total{reason}`` counts it,
and the pull is retried after a back-off that doubles per failure up to
``backoff_max_seconds`` (but a store with nothing published yet is polled at the
usual interval, so a new host is ready soon after the first publish). A run killed
mid-download leaves only ``.incoming-*``, removed at the next start.

A process, not a thread in the gunicorn workers: every worker would download the
same files into the same folder. One process per host downloads each version once,
and survives worker restarts.

Metrics (``recsys_sync_*``) are served by this process on its own port
(``--metrics-port``, prometheus_client's HTTP server), not through the lookup
server's /metrics: gunicorn's master creates and empties its multiprocess metrics
folder at each start, which the sync process outlives, so scrape both per host.

Run: ``python -m lookup_server.sync --help``. Exit status of ``--once``: 0 when the
host holds the store's current version, verified; 1 when the pull failed; 2 for a
usage or settings error.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from schemas.settings import load_conf
from schemas.snapshot import (
    CURRENT_POINTER, MANIFEST_FILE, POLICY_FILE, Manifest, SnapshotFormatError, fsync_dir, read_current_version,
    verify_snapshot_dir,
)
from schemas.storage import Location, S3Settings, StorageError

from lookup_server.config import SyncConfig

log = logging.getLogger("lookup_server.sync")  # not __main__ under python -m

INCOMING_PREFIX = ".incoming-"
CURRENT_TMP_PREFIX = f".{CURRENT_POINTER}.tmp-"
CHUNK_BYTES = 1 << 20
MAX_POINTER_BYTES = 1024  # CURRENT holds one version name
# botocore's own attempts per request; past them the pull fails and the loop backs off.
REQUEST_ATTEMPTS = 2
PREFIX = "recsys_sync_"

# Why a pull failed, in one word: the ``reason`` label of recsys_sync_failures_total.
FAILURE_REASONS = (
    "unreachable",      # no connection, a timeout (a hung store), a 5xx, a download cut short
    "denied",           # no or wrong credentials, access denied
    "store_error",      # any other error answer (e.g. no such bucket)
    "no_current",       # nothing published under the prefix (or the store lost it)
    "bad_pointer",      # CURRENT names no version (empty, a path, a hidden name)
    "missing_version",  # CURRENT names a version whose manifest is not in the store
    "bad_manifest",     # unreadable, another format, naming another version or bad file names
    "missing_file",     # a file the manifest lists is not in the store
    "truncated",        # an object shorter than the manifest says
    "size_mismatch",    # an object longer than the manifest says
    "checksum",         # same size, other bytes: SHA-256 differs from the manifest's
    "disk",             # the host could not write (full disk, permissions)
    "error",            # anything nobody foresaw
)
# Failures retried at the poll interval rather than backed off (see SyncLoop._failed).
NOT_BACKED_OFF = ("no_current",)
# What each pull ended as: the ``outcome`` label of the poll counter and duration histogram.
OUTCOMES = ("not_modified", "up_to_date", "switched", "failed")
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# verify_snapshot_dir's reasons, as ours.
_VERIFY_REASONS = {"size_mismatch": "size_mismatch", "checksum_mismatch": "checksum",
                   "file_missing": "missing_file", "no_manifest": "bad_manifest", "bad_manifest": "bad_manifest"}


class SyncFailure(Exception):
    """A pull that must not change what the host serves; ``reason`` is one of FAILURE_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Stopping(BaseException):
    """SIGTERM or SIGINT arrived during a pull: it unwinds the pull (whose cleanup runs).

    A BaseException, so no ``except Exception`` in botocore or here swallows it."""


class _NotModified(Exception):
    """The store answered 304 to the conditional GET of CURRENT."""


@dataclass
class PullResult:
    outcome: str  # not_modified, up_to_date or switched (see OUTCOMES)
    version: str
    previous: str | None = None
    downloaded_bytes: int = 0
    removed: list[str] = field(default_factory=list)


# --- metrics ----------------------------------------------------------------

class SyncStats:
    """What ``recsys_sync_*`` expose, as plain numbers: the pull loop writes, a scrape reads.

    Not prometheus_client's Counter/Gauge objects: with ``PROMETHEUS_MULTIPROC_DIR`` in
    the environment (set for gunicorn on the same host) those would write into
    gunicorn's files instead of this process's registry.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self.polls = dict.fromkeys(OUTCOMES, 0)
        self.consecutive_failures = 0
        self.downloaded_bytes = 0
        self.leftovers_removed = 0
        self.version: str | None = None
        self._buckets = {outcome: [0] * (len(DURATION_BUCKETS) + 1) for outcome in OUTCOMES}
        self._duration_sum = dict.fromkeys(OUTCOMES, 0.0)

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.downloaded_bytes += n

    def record(self, outcome: str, seconds: float, reason: str | None = None, version: str | None = None,
               now: float | None = None) -> None:
        with self._lock:
            self.polls[outcome] += 1
            self._buckets[outcome][bisect_left(DURATION_BUCKETS, seconds)] += 1
            self._duration_sum[outcome] += seconds
            if reason is None:
                self.last_success = time.time() if now is None else now
                self.consecutive_failures = 0
                self.version = version
            else:
                self.failures[reason] = self.failures.get(reason, 0) + 1
                self.consecutive_failures += 1

    def collect(self) -> Iterable[Metric]:
        with self._lock:  # a consistent copy; the families are built outside the lock
            last_success, version = self.last_success, self.version
            failures, polls = dict(self.failures), dict(self.polls)
            consecutive, downloaded = self.consecutive_failures, self.downloaded_bytes
            leftovers = self.leftovers_removed
            buckets = {outcome: list(counts) for outcome, counts in self._buckets.items()}
            sums = dict(self._duration_sum)
        families: list[Metric] = []
        if last_success is not None:
            families.append(GaugeMetricFamily(PREFIX + "last_success_timestamp_seconds",
                                              "Unix time of the last pull that left the host on the store's "
                                              "current version, verified.", value=last_success))
        failed = CounterMetricFamily(PREFIX + "failures", "Failed pulls by why.", labels=("reason",))
        for reason, count in failures.items():
            failed.add_metric((reason,), count)
        counted = CounterMetricFamily(PREFIX + "polls", "Pulls by outcome (not_modified: a 304).",
                                      labels=("outcome",))
        for outcome, count in polls.items():
            counted.add_metric((outcome,), count)
        families += [
            failed, counted,
            GaugeMetricFamily(PREFIX + "consecutive_failures", "Failed pulls since the last good one.",
                              value=consecutive),
            CounterMetricFamily(PREFIX + "downloaded_bytes", "Bytes of snapshot files downloaded.",
                                value=downloaded),
            CounterMetricFamily(PREFIX + "leftovers_removed",
                                "Leftovers of interrupted pulls (.incoming-*, CURRENT.tmp) removed at start.",
                                value=leftovers),
        ]
        duration = HistogramMetricFamily(PREFIX + "pull_duration_seconds",
                                         "Seconds per pull, from the GET of CURRENT to the new CURRENT.",
                                         labels=("outcome",))
        for outcome in OUTCOMES:
            cumulative, cumulated = 0, []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), buckets[outcome]):
                cumulative += count
                cumulated.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            duration.add_metric((outcome,), cumulated, sums[outcome])
        families.append(duration)
        if version is not None:
            info = GaugeMetricFamily(PREFIX + "snapshot_info", "The version the host's CURRENT names (=1).",
                                     labels=("version",))
            info.add_metric((version,), 1.0)
            families.append(info)
        return families


# --- the store ----------------------------------------------------------------

def s3_client(settings: S3Settings, connect_timeout: float, read_timeout: float):
    """boto3's S3 client as conf/storage.toml describes the store (credentials: the AWS variables)."""
    config = Config(s3={"addressing_style": "path"} if settings.path_style else {},
                    retries={"mode": "standard", "total_max_attempts": REQUEST_ATTEMPTS},
                    connect_timeout=connect_timeout, read_timeout=read_timeout)
    return boto3.client("s3", endpoint_url=settings.endpoint or None, region_name=settings.region or None,
                        config=config)


def parse_source(source: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (``s3a://`` too); ValueError otherwise."""
    if not source:
        raise ValueError("no snapshot source: set [sync] source in conf/server.toml "
                         "(RECSYS__SERVER__SYNC__SOURCE) or pass --source s3://bucket/prefix")
    try:
        location = Location.of(source)
    except StorageError as exc:
        raise ValueError(str(exc)) from exc
    if not location.is_s3:
        raise ValueError(f"{source}: the snapshot source must be an s3:// URL (s3://bucket/prefix)")
    return location.authority, location.path.strip("/")


# --- one host's snapshot folder -------------------------------------------------

class SnapshotPuller:
    """Brings ``root`` to the version the store's CURRENT names, one ``pull()`` at a time."""

    def __init__(self, client, bucket: str, prefix: str, root: Path, keep_versions: int,
                 stats: SyncStats | None = None, policy_path: Path | None = None):
        self.client = client
        self.policy_path = policy_path
        self.bucket = bucket
        self.prefix = prefix
        self.root = Path(root)
        self.keep_versions = keep_versions
        self.stats = stats or SyncStats()
        self.source = f"s3://{bucket}/{prefix}".rstrip("/")
        # The ETag of the CURRENT object last applied, and the version it named: sent
        # as If-None-Match while the local CURRENT still names that version.
        self._etag: str | None = None
        self._etag_version: str | None = None
        self._verified: dict[str, tuple] = {}  # version -> fingerprint when this process verified it

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    # --- start ----------------------------------------------------------------

    def remove_leftovers(self) -> list[str]:
        """Remove what an interrupted run left (``.incoming-*``, a CURRENT never renamed); their names."""
        if not self.root.is_dir():
            return []
        removed = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(INCOMING_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(CURRENT_TMP_PREFIX):
                path.unlink(missing_ok=True)
            else:
                continue
            removed.append(path.name)
        return removed

    # --- one pull -------------------------------------------------------------

    def pull(self) -> PullResult:
        """One conditional GET of CURRENT and whatever it takes to serve what it names.

        Raises SyncFailure (the host's CURRENT and versions are then as they were)."""
        local = read_current_version(self.root)
        conditional = {}
        if self._etag and local == self._etag_version and (self.root / local / MANIFEST_FILE).is_file():
            conditional["IfNoneMatch"] = self._etag
        try:
            response = self._get(self._key(CURRENT_POINTER), "no_current", **conditional)
        except _NotModified:
            return PullResult("not_modified", local, local)
        version = self._parse_pointer(self._read(response, self._key(CURRENT_POINTER), MAX_POINTER_BYTES))
        etag = response.get("ETag")
        if version == local and self._is_verified(version):
            self._remember(etag, version)
            return PullResult("up_to_date", version, local)
        try:
            downloaded = 0 if self._is_verified(version) else self._download(version)
            self._point_current_at(version)
            self._install_policy(version)
        except OSError as exc:  # the store's errors are SyncFailures by now: this is the host's disk
            raise SyncFailure("disk", f"{self.root}: {exc}") from exc
        self._remember(etag, version)
        return PullResult("switched", version, local, downloaded, self._prune())

    def _remember(self, etag: str | None, version: str) -> None:
        self._etag, self._etag_version = etag, version

    def _parse_pointer(self, body: bytes) -> str:
        text = body.decode("utf-8", "replace").strip()
        if (not text or "/" in text or "\\" in text or text.startswith(".") or text == CURRENT_POINTER
                or not text.isprintable() or any(c.isspace() for c in text) or len(text) > 255):
            raise SyncFailure("bad_pointer", f"{self.source}/{CURRENT_POINTER} names no version: {text[:80]!r}")
        return text

    def _get(self, key: str, missing_reason: str, **kwargs) -> dict:
        where = f"s3://{self.bucket}/{key}"
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status == 304 or code == "304":
                raise _NotModified() from None
            message = f"{where}: {code or status} {error.get('Message', '')}".rstrip()
            if code in ("NoSuchKey", "404"):
                raise SyncFailure(missing_reason, f"{where}: no such object") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
                raise SyncFailure("denied", message) from None
            if status >= 500:
                raise SyncFailure("unreachable", message) from None
            raise SyncFailure("store_error", message) from None
        except NoCredentialsError:
            raise SyncFailure("denied", f"{where}: no credentials (set AWS_ACCESS_KEY_ID and "
                                        "AWS_SECRET_ACCESS_KEY)") from None
        except BotoCoreError as exc:  # connection refused, timeouts (a hung store), bad endpoint
            raise SyncFailure("unreachable", f"{where}: {exc}") from None

    def _read(self, response: dict, key: str, limit: int) -> bytes:
        """A small object's whole body (CURRENT, a manifest)."""
        try:
            body = response["Body"].read(limit + 1)
        except BotoCoreError as exc:
            raise SyncFailure("unreachable", f"s3://{self.bucket}/{key}: {exc}") from None
        finally:
            response["Body"].close()
        if len(body) > limit:
            raise SyncFailure("bad_manifest" if key.endswith(MANIFEST_FILE) else "bad_pointer",
                              f"s3://{self.bucket}/{key}: larger than {limit} bytes")
        return body

    def _is_verified(self, version: str) -> bool:
        """Whether ``<root>/<version>`` is complete and passes its manifest (checked once per
        process while its files stay the same); a broken copy is logged and downloaded again."""
        path = self.root / version
        if not path.is_dir():
            return False
        fingerprint = _fingerprint(path)
        if self._verified.get(version) == fingerprint:
            return True
        try:
            verify_snapshot_dir(path)
        except SnapshotFormatError as exc:
            log.warning("the local copy of %s is broken (%s): downloading it again", version, exc)
            return False
        self._verified[version] = fingerprint
        return True

    def _download(self, version: str) -> int:
        """Fetch, fsync, verify and move ``version`` into ``root``; the bytes downloaded."""
        self.root.mkdir(parents=True, exist_ok=True)
        incoming = self.root / f"{INCOMING_PREFIX}{version}"
        shutil.rmtree(incoming, ignore_errors=True)
        # Staged as .incoming-<v>/<v>/ so that verify_snapshot_dir checks the folder under
        # its real name (the manifest names it) before it becomes visible.
        staged = incoming / version
        staged.mkdir(parents=True)
        try:
            manifest_key = self._key(version, MANIFEST_FILE)
            manifest_bytes = self._read(self._get(manifest_key, "missing_version"), manifest_key, 16 << 20)
            manifest = self._parse_manifest(manifest_bytes, version)
            downloaded = 0
            for name, meta in sorted(manifest.files.items()):
                downloaded += self._download_file(self._key(version, name), staged / name, meta["bytes"])
            _write_durably(staged / MANIFEST_FILE, manifest_bytes)  # last, as the publisher uploads it
            fsync_dir(staged)
            try:
                verify_snapshot_dir(staged)
            except SnapshotFormatError as exc:
                raise SyncFailure(_VERIFY_REASONS.get(exc.reason, "bad_manifest"), str(exc)) from None
            final = self.root / version
            if final.exists():  # a broken earlier copy (_is_verified said so)
                shutil.rmtree(final)
            os.rename(staged, final)
            fsync_dir(self.root)
            self._verified[version] = _fingerprint(final)
            return downloaded
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def _parse_manifest(self, body: bytes, version: str) -> Manifest:
        where = f"{self.source}/{version}/{MANIFEST_FILE}"
        try:
            manifest = Manifest.from_json(body.decode("utf-8"))
        except (SnapshotFormatError, UnicodeDecodeError) as exc:
            raise SyncFailure("bad_manifest", f"{where}: {exc}") from None
        if manifest.version != version:
            raise SyncFailure("bad_manifest", f"{where} names version {manifest.version!r}")
        for name, meta in manifest.files.items():
            plain = name and PurePosixPath(name).name == name and "\\" not in name and not name.startswith(".")
            if not plain or name == MANIFEST_FILE:
                raise SyncFailure("bad_manifest", f"{where} lists a file that is no plain name: {name!r}")
            size = meta.get("bytes") if isinstance(meta, dict) else None
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise SyncFailure("bad_manifest", f"{where}: {name} has no size")
        return manifest

    def _download_file(self, key: str, path: Path, expected: int) -> int:
        where = f"s3://{self.bucket}/{key}"
        response = self._get(key, "missing_file")
        body = response["Body"]
        length = response.get("ContentLength")
        if length is not None and length != expected:  # refused before a byte is written
            body.close()
            raise SyncFailure("truncated" if length < expected else "size_mismatch",
                              f"{where} has {length} bytes, the manifest says {expected}")
        written = 0
        try:
            with open(path, "wb") as fh:
                try:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        fh.write(chunk)
                        written += len(chunk)
                        self.stats.add_bytes(len(chunk))
                except BotoCoreError as exc:  # cut short, or the store stopped answering mid-file
                    raise SyncFailure("unreachable", f"{where}: download interrupted after {written} "
                                                     f"of {expected} bytes ({exc})") from None
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            body.close()
        if written != expected:
            raise SyncFailure("truncated" if written < expected else "size_mismatch",
                              f"{where}: {written} bytes received, the manifest says {expected}")
        return written

    def _point_current_at(self, version: str) -> None:
        """Replace the local CURRENT by rename: a worker reads the old name or the new, whole."""
        tmp = self.root / f"{CURRENT_TMP_PREFIX}{os.getpid()}"
        _write_durably(tmp, (version + "\n").encode())
        os.replace(tmp, self.root / CURRENT_POINTER)
        fsync_dir(self.root)

    def _install_policy(self, version: str) -> None:
        """The snapshot's policy.json (the evaluation's verdict it was built with) where the
        server follows it, by rename; a snapshot without one leaves the file as it is."""
        carried = self.root / version / POLICY_FILE
        if self.policy_path is None or not carried.is_file():
            return
        self.policy_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.policy_path.with_name(f".{self.policy_path.name}.tmp-{os.getpid()}")
        _write_durably(tmp, carried.read_bytes())
        os.replace(tmp, self.policy_path)

    def _prune(self) -> list[str]:
        """Remove all but the newest ``keep_versions`` versions (by name) and the one in service."""
        in_service = read_current_version(self.root)
        versions = sorted(p.name for p in self.root.iterdir()
                          if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file())
        keep = set(versions[-self.keep_versions:]) | {in_service}
        removed = [v for v in versions if v not in keep]
        for version in removed:
            shutil.rmtree(self.root / version, ignore_errors=True)
            self._verified.pop(version, None)
        return removed


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fingerprint(path: Path) -> tuple:
    def stat(name: str):
        try:
            st = (path / name).stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    return tuple(stat(p.name) for p in sorted(path.iterdir())) if path.is_dir() else ()


# --- the loop -------------------------------------------------------------------

class SyncLoop:
    """Pulls every poll interval, backs off after failures, logs one line per pull."""

    def __init__(self, puller: SnapshotPuller, poll_interval: float, backoff_initial: float, backoff_max: float):
        self.puller = puller
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop = threading.Event()
        self.once = False
        self.failures = 0  # backed-off failures in a row
        self.next_delay = poll_interval
        self._in_pull = False

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self.stop.set()
        if self._in_pull:  # a pull may wait up to the read timeout on a hung store: unwind it now
            raise Stopping(signal.Signals(signum).name)

    def retry_delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` backed-off failures in a row (0: the poll interval)."""
        if failures == 0:
            return self.poll_interval
        return min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 60))

    def poll(self) -> bool:
        """One pull, counted and logged in one line; True when the host then holds the
        store's current version. Sets ``next_delay``: when to pull again."""
        stats, started = self.puller.stats, time.monotonic()
        self._in_pull = True
        try:
            result = self.puller.pull()
        except SyncFailure as exc:
            self._in_pull = False
            self._failed(exc.reason, str(exc), started)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug or a surprise must not end the host's pulls
            self._in_pull = False
            log.debug("pull failed", exc_info=True)
            self._failed("error", f"{type(exc).__name__}: {exc}", started)
            return False
        finally:
            self._in_pull = False
        seconds = time.monotonic() - started
        stats.record(result.outcome, seconds, version=result.version)
        self.failures, self.next_delay = 0, self.poll_interval
        if result.outcome == "switched":
            log.info("now serving %s (was %s): %d bytes downloaded in %.2f s from %s; removed %s",
                     result.version, result.previous or "nothing", result.downloaded_bytes, seconds,
                     self.puller.source, ", ".join(result.removed) or "nothing")
        elif result.outcome == "up_to_date":
            log.info("up to date: %s is the store's CURRENT and verified here (%.2f s)", result.version, seconds)
        else:
            log.debug("not modified (304): still %s", result.version)
        return True

    def _failed(self, reason: str, message: str, started: float) -> None:
        self.puller.stats.record("failed", time.monotonic() - started, reason=reason)
        # Nothing published yet is what a new deployment looks like, and the store answered
        # (cheaply): polled as usual, so the first publish is picked up within the interval.
        self.failures = 0 if reason in NOT_BACKED_OFF else self.failures + 1
        self.next_delay = self.retry_delay(self.failures)
        log.warning("pull failed (%s): %s; still serving %s%s", reason, message,
                    read_current_version(self.puller.root) or "nothing",
                    "" if self.once else f"; retry in {self.next_delay:.1f} s")

    def run(self, once: bool = False) -> bool:
        """Pull until stopped (or once); whether the last pull left the host on the store's version."""
        self.once, ok = once, False
        while not self.stop.is_set():
            try:
                ok = self.poll()
            except Stopping:
                break
            if once:
                return ok
            self.stop.wait(self.next_delay)
        return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lookup_server.sync",
        description="Pull published snapshots from an object store (s3://bucket/prefix) into this lookup "
                    "host's snapshot folder: conditional GET of CURRENT, download, fsync, verify (SHA-256), "
                    "rename, then replace the local CURRENT, which the running gunicorn follows.",
        epilog="Settings: [sync] of conf/server.toml (RECSYS__SERVER__SYNC__<KEY>), the snapshot folder as the "
               "lookup server's (RECSYS_DATA_DIR, snapshot_dir), the store in conf/storage.toml "
               "(RECSYS__STORAGE__S3__<KEY>), credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. "
               "SIGTERM stops it between or during pulls, leaving the served version as it was.")
    parser.add_argument("--once", action="store_true",
                        help="pull once and exit: 0 if the host then holds the store's current version, "
                             "verified; 1 if not")
    parser.add_argument("--source", help="s3://bucket/prefix to pull from (default: [sync] source)")
    parser.add_argument("--snapshot-root", type=Path,
                        help="local folder holding CURRENT and the versions (default: the lookup server's, "
                             "<data_dir>/snapshots)")
    parser.add_argument("--metrics-port", type=int,
                        help="serve recsys_sync_* metrics on this port (default: [sync] metrics_port; 0: none)")
    parser.add_argument("--metrics-addr", help="interface of the metrics port (default: [sync] metrics_addr)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG also logs each 304 (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))

    try:
        conf = load_conf("server")
        config = SyncConfig.from_conf(conf)
        bucket, prefix = parse_source(args.source or config.source)
        client = s3_client(S3Settings.load(), config.connect_timeout_seconds, config.read_timeout_seconds)
    except (ValueError, BotoCoreError) as exc:
        print(f"lookup_server.sync: {exc}", file=sys.stderr)
        return 2
    root = args.snapshot_root.resolve() if args.snapshot_root else config.snapshot_root
    stats = SyncStats()
    puller = SnapshotPuller(client, bucket, prefix, root, config.keep_versions, stats, config.policy_path)
    loop = SyncLoop(puller, config.poll_interval_seconds, config.backoff_initial_seconds, config.backoff_max_seconds)
    loop.install_signal_handlers()

    port = config.metrics_port if args.metrics_port is None else args.metrics_port
    if port:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(stats)
        addr = args.metrics_addr or config.metrics_addr
        try:
            start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            print(f"lookup_server.sync: cannot serve metrics on {addr}:{port}: {exc}", file=sys.stderr)
            return 2

    leftovers = puller.remove_leftovers()
    stats.leftovers_removed = len(leftovers)
    stats.version = read_current_version(root)
    if leftovers:
        log.info("removed %s: left by an interrupted pull", ", ".join(leftovers))
    log.info("pulling %s into %s every %.1f s (keeping %d versions; serving %s%s)", puller.source, root,
             config.poll_interval_seconds, config.keep_versions, stats.version or "nothing",
             f"; metrics on :{port}" if port else "")
    ok = loop.run(once=args.once)
    if loop.stop.is_set():
        log.info("stopped; serving %s", read_current_version(root) or "nothing")
    if args.once:
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
