"""Where data lives: a local path or a URL, and the driver's small reads and writes there.

A data location is a plain path (relative or absolute), ``file://``, or an object-store
or cluster URL (``s3a://``, ``s3://``, ``hdfs://``, ``gs://``, ``abfs://``). Spark takes
the string as it is; nothing wraps a URL in ``pathlib.Path`` (which would turn
``s3a://bucket/x`` into a local folder ``s3a:/bucket/x``). The driver's own files
(JSON documents, reports, model files, snapshot uploads) go through pyarrow's
filesystems with the same location; S3 settings come from ``conf/storage.toml``.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterator
from urllib.parse import unquote, urlsplit

from schemas.settings import load_conf

if TYPE_CHECKING:  # pyarrow is imported on first use: the lookup server starts without it
    import pyarrow.fs as pafs

# Hadoop's names for S3 and pyarrow's; both mean the same bucket and key.
S3_SCHEMES = ("s3a", "s3", "s3n")


class StorageError(RuntimeError):
    """A data location cannot be used: unreachable, no credentials, bad URL. One line, naming it."""


@dataclass(frozen=True)
class Location:
    """A local absolute path (``scheme == ""``) or a URL, normalised; ``str()`` is what Spark takes."""

    scheme: str
    authority: str  # bucket or host:port; "" for local paths
    path: str       # absolute, "/"-separated, no trailing "/" (except the root itself)

    @classmethod
    def of(cls, where: "str | os.PathLike | Location", base: "Location | None" = None) -> "Location":
        """Parse ``where``; a relative path is taken from ``base`` (a Location) or the working directory."""
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        parts = urlsplit(text)
        # A one-letter "scheme" would be a Windows drive; there are none here, but a
        # path such as "a:b" is a file name, not a URL: only "scheme://" counts.
        if parts.scheme.lower() == "file" and text.lower().startswith("file:/"):  # Hadoop writes file:/x too
            return cls("", "", _normal(unquote(parts.path) or "/"))
        if parts.scheme and text.startswith(f"{parts.scheme}://"):
            scheme = parts.scheme.lower()
            if not parts.netloc and scheme in S3_SCHEMES:
                raise StorageError(f"{text}: an {scheme}:// URL needs a bucket ({scheme}://bucket/prefix)")
            return cls(scheme, parts.netloc, _normal(parts.path or "/"))
        if os.path.isabs(text):
            return cls("", "", _normal(text))
        if base is not None:
            return base / text
        return cls("", "", _normal(os.path.abspath(text)))

    @property
    def is_local(self) -> bool:
        return not self.scheme

    @property
    def is_s3(self) -> bool:
        return self.scheme in S3_SCHEMES

    def __truediv__(self, part: "str | os.PathLike") -> "Location":
        joined = PurePosixPath(self.path, *PurePosixPath(os.fspath(part)).parts)
        return Location(self.scheme, self.authority, _normal(str(joined)))

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.authority}{self.path}"

    def __fspath__(self) -> str:
        # os.fspath() only on local locations: a URL must never become a local path by accident.
        return str(self.local_path)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> "Location":
        return Location(self.scheme, self.authority, str(PurePosixPath(self.path).parent))

    @property
    def local_path(self) -> Path:
        """The local folder or file; a StorageError for a URL."""
        if not self.is_local:
            raise StorageError(f"{self} is not on this machine's file system")
        return Path(self.path)

    # --- the driver's file operations, through pyarrow's filesystems -----------------

    def filesystem(self) -> "tuple[pafs.FileSystem, str]":
        """pyarrow's filesystem for this location and the path within it."""
        import pyarrow.fs as pafs

        if self.is_local:
            return pafs.LocalFileSystem(), self.path
        if self.is_s3:
            return s3_filesystem(), f"{self.authority}{self.path}".rstrip("/")
        try:
            fs, path = pafs.FileSystem.from_uri(str(self))
        except Exception as exc:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
            raise StorageError(f"{self}: no filesystem for {self.scheme}:// on this driver ({exc})") from exc
        return fs, path

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        fs, path = self.filesystem()
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        fs, path = self.filesystem()
        return fs.get_file_info(path).type == pafs.FileType.Directory

    def modified(self) -> float | None:
        """When the file was last written (seconds since the epoch), or None if there is no file."""
        import pyarrow.fs as pafs

        fs, path = self.filesystem()
        info = fs.get_file_info(path)
        return info.mtime.timestamp() if info.type == pafs.FileType.File and info.mtime else None

    def children(self) -> list[str]:
        """Names directly under this folder (files and folders), sorted; [] if there is none."""
        import pyarrow.fs as pafs

        fs, path = self.filesystem()
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted(PurePosixPath(info.path).name for info in infos)

    def read_bytes(self) -> bytes:
        """The whole file; FileNotFoundError if there is none."""
        fs, path = self.filesystem()
        try:
            with fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                raise FileNotFoundError(str(self)) from exc
            raise

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Replace the file whole: readers see the old or the new content, never a part.

        Local: a temporary file, fsync, rename. Object stores: one PUT, which replaces
        an object atomically."""
        if self.is_local:
            target = self.local_path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            return
        fs, path = self.filesystem()
        with fs.open_output_stream(path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def remove_tree(self) -> None:
        """Delete this folder and everything under it; nothing if it is not there."""
        fs, path = self.filesystem()
        if self.exists():
            fs.delete_dir(path)

    def upload_dir(self, source: Path) -> None:
        """Copy the local folder ``source`` (recursively) to this location."""
        import pyarrow.fs as pafs

        fs, path = self.filesystem()
        pafs.copy_files(str(source), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    def download_dir(self, target: Path) -> None:
        """Copy this folder (recursively) into the local folder ``target``."""
        import pyarrow.fs as pafs

        fs, path = self.filesystem()
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


@contextmanager
def staged_locally(target: Location) -> Iterator[Path]:
    """A local folder to write ``target``'s files in: ``target`` itself when it is local;
    for a URL, a temporary folder uploaded over ``target`` (what was there removed first)
    when the block ends without an error. For what only a local file system can write
    (an LMDB environment, a report written by rename)."""
    if target.is_local:
        yield target.local_path
        return
    with tempfile.TemporaryDirectory(prefix="recsys-staged-") as tmp:
        local = Path(tmp) / (target.name or "root")
        yield local
        target.remove_tree()
        if local.exists():
            target.upload_dir(local)


@contextmanager
def staged_file(target: Location) -> Iterator[Path]:
    """A local file standing for ``target`` (for what needs a local file, e.g. SQLite):
    ``target`` itself when it is local; for a URL, a temporary copy of it (empty if it
    does not exist yet) uploaded back when the block ends without an error. One writer
    at a time, as for every file under the data dir."""
    if target.is_local:
        target.local_path.parent.mkdir(parents=True, exist_ok=True)
        yield target.local_path
        return
    with tempfile.TemporaryDirectory(prefix="recsys-staged-") as tmp:
        local = Path(tmp) / target.name
        if target.exists():
            local.write_bytes(target.read_bytes())
        yield local
        if local.exists():
            target.write_bytes(local.read_bytes())


def _normal(path: str) -> str:
    """``path`` with "." and ".." resolved and no trailing "/" (but "/" stays "/")."""
    normal = os.path.normpath(path).replace(os.sep, "/")
    if normal.startswith("//"):  # POSIX keeps a leading "//"; a URL path has no use for it
        normal = "/" + normal.lstrip("/")
    return normal


@dataclass(frozen=True)
class S3Settings:
    """``[s3]`` of conf/storage.toml."""

    endpoint: str
    region: str
    path_style: bool

    @classmethod
    def load(cls) -> "S3Settings":
        section = load_conf("storage").get("s3", {})
        return cls(str(section.get("endpoint", "")).rstrip("/"), str(section.get("region", "us-east-1")),
                   bool(section.get("path_style", False)))


def has_credentials(environ=os.environ) -> bool:
    """Whether the standard AWS variables name a key (a host role is not visible from here)."""
    return bool(environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"))


@lru_cache(maxsize=4)
def _s3_filesystem(settings: S3Settings) -> "pafs.S3FileSystem":
    import pyarrow.fs as pafs

    options: dict = {"region": settings.region, "force_virtual_addressing": not settings.path_style,
                     "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
                     "connect_timeout": 5, "request_timeout": 30}
    if settings.endpoint:
        endpoint = urlsplit(settings.endpoint)
        options.update(endpoint_override=endpoint.netloc or endpoint.path, scheme=endpoint.scheme or "https")
    return pafs.S3FileSystem(**options)


def s3_filesystem() -> "pafs.S3FileSystem":
    """pyarrow's S3 filesystem as conf/storage.toml describes it (credentials from the environment)."""
    return _s3_filesystem(S3Settings.load())


def check_reachable(location: Location) -> None:
    """Stop early, in one line naming the URL, when a remote data location cannot be used."""
    if location.is_local:
        return
    if location.is_s3 and not has_credentials():
        raise StorageError(f"{location}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    import pyarrow.fs as pafs

    try:
        fs, path = location.filesystem()
        bucket_or_root = path.split("/", 1)[0] if location.is_s3 else path
        if fs.get_file_info(bucket_or_root).type == pafs.FileType.NotFound:
            raise StorageError(f"{location}: {'bucket' if location.is_s3 else 'location'} "
                               f"{bucket_or_root!r} does not exist")
    except StorageError:
        raise
    except OSError as exc:
        endpoint = S3Settings.load().endpoint or "AWS" if location.is_s3 else location.authority
        raise StorageError(f"{location}: store unreachable at {endpoint} "
                           f"({str(exc).splitlines()[0][:200]})") from exc
