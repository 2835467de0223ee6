"""schemas.storage: data locations as paths or URLs, and the driver's reads and writes there."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs import cli
from jobs.paths import DataPaths
from schemas.settings import data_dir
from schemas.storage import Location, StorageError, check_reachable, staged_file, staged_locally


class TestParsing:
    @pytest.mark.parametrize("text, scheme, authority, path, as_string", [
        ("s3a://bucket/recsys/", "s3a", "bucket", "/recsys", "s3a://bucket/recsys"),
        ("s3://bucket", "s3", "bucket", "/", "s3://bucket/"),
        ("hdfs://namenode:8020/data/recsys", "hdfs", "namenode:8020", "/data/recsys", "hdfs://namenode:8020/data/recsys"),
        ("gs://b/x/../y", "gs", "b", "/y", "gs://b/y"),
        ("file:///srv/recsys/", "", "", "/srv/recsys", "/srv/recsys"),
        ("file:/srv/recsys/a%20b", "", "", "/srv/recsys/a b", "/srv/recsys/a b"),  # as Hadoop writes it
        ("/srv//recsys/./data", "", "", "/srv/recsys/data", "/srv/recsys/data"),
    ])
    def test_urls_and_absolute_paths(self, text, scheme, authority, path, as_string):
        location = Location.of(text)
        assert (location.scheme, location.authority, location.path) == (scheme, authority, path)
        assert str(location) == as_string
        assert location.is_local == (scheme == "")

    def test_relative_paths_from_the_working_directory_or_a_base(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert str(Location.of("var/demo")) == str(tmp_path / "var" / "demo")
        assert str(Location.of("serving", base=Location.of("s3a://b/recsys"))) == "s3a://b/recsys/serving"

    def test_a_colon_in_a_file_name_is_not_a_scheme(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert Location.of("a:b").path == str(tmp_path / "a:b")

    def test_joining_keeps_the_scheme(self):
        lake = Location.of("s3a://bucket/recsys") / "lake"
        assert str(lake / "events") == "s3a://bucket/recsys/lake/events"
        assert str(lake / Path("evaluation") / "tuned.json") == "s3a://bucket/recsys/lake/evaluation/tuned.json"
        assert (lake / "events").name == "events" and str((lake / "events").parent) == "s3a://bucket/recsys/lake"

    def test_an_s3_url_needs_a_bucket(self):
        with pytest.raises(StorageError, match="needs a bucket"):
            Location.of("s3a:///recsys")

    def test_a_url_never_becomes_a_local_path(self):
        location = Location.of("s3a://bucket/recsys")
        with pytest.raises(StorageError, match="not on this machine"):
            location.local_path
        with pytest.raises(StorageError):
            os.fspath(location)

    def test_data_paths_of_a_url(self):
        paths = DataPaths("s3a://bucket/recsys")
        assert paths.table("events") == "s3a://bucket/recsys/lake/events"
        assert str(paths.checkpoints / "als") == "s3a://bucket/recsys/checkpoints/als"
        assert str(paths.landing_for("events")) == "s3a://bucket/recsys/landing/events"

    def test_data_paths_of_a_relative_path(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert DataPaths("var").table("events") == str(tmp_path / "var" / "lake" / "events")

    def test_lookup_hosts_need_a_local_data_dir(self, monkeypatch):
        monkeypatch.setenv("RECSYS_DATA_DIR", "s3a://bucket/recsys")
        with pytest.raises(StorageError, match="s3a://bucket/recsys"):
            data_dir({})


class TestLocalFiles:
    def test_write_read_list_remove(self, tmp_path):
        root = Location.of(tmp_path)
        (root / "evaluation" / "tuned.json").write_text('{"a": 1}')
        assert (root / "evaluation" / "tuned.json").read_text() == '{"a": 1}'
        assert root.children() == ["evaluation"] and (root / "evaluation").is_dir()
        assert (root / "evaluation" / "tuned.json").modified() is not None
        assert not list((tmp_path / "evaluation").glob(".*tmp*"))  # the temporary file was renamed
        (root / "evaluation").remove_tree()
        assert not (tmp_path / "evaluation").exists() and root.children() == []
        with pytest.raises(FileNotFoundError):
            (root / "missing.json").read_text()

    def test_staged_locally_is_the_folder_itself(self, tmp_path):
        with staged_locally(Location.of(tmp_path / "report")) as folder:
            assert folder == tmp_path / "report"


@pytest.fixture
def bucket(object_store_env) -> Location:
    return Location.of(f"s3a://{object_store_env.new_bucket()}/recsys")


class TestObjectStore:
    """The same operations on a real S3 API (scripts/objectstore), through pyarrow."""

    def test_write_read_list_remove(self, bucket):
        (bucket / "evaluation" / "tuned.json").write_text('{"a": 1}')
        (bucket / "evaluation" / "policy.json").write_text("{}")
        assert (bucket / "evaluation" / "tuned.json").read_text() == '{"a": 1}'
        assert (bucket / "evaluation").children() == ["policy.json", "tuned.json"]
        assert (bucket / "evaluation").is_dir() and (bucket / "evaluation" / "tuned.json").exists()
        with pytest.raises(FileNotFoundError):
            (bucket / "evaluation" / "missing.json").read_text()
        (bucket / "evaluation").remove_tree()
        assert not (bucket / "evaluation" / "tuned.json").exists()

    def test_folders_go_up_and_come_down(self, bucket, tmp_path):
        (tmp_path / "up" / "v1").mkdir(parents=True)
        (tmp_path / "up" / "v1" / "data.mdb").write_bytes(b"\x00" * 1000)
        (bucket / "snapshots").upload_dir(tmp_path / "up")
        (bucket / "snapshots").download_dir(tmp_path / "down")
        assert (tmp_path / "down" / "v1" / "data.mdb").read_bytes() == b"\x00" * 1000

    def test_staged_folder_and_file_are_uploaded_at_the_end(self, bucket):
        with staged_locally(bucket / "report") as folder:
            folder.mkdir(parents=True)
            (folder / "report.html").write_text("<html>")
        assert (bucket / "report" / "report.html").read_text() == "<html>"
        with staged_file(bucket / "tuning.db") as local:
            local.write_bytes(b"one")
        with staged_file(bucket / "tuning.db") as local:
            assert local.read_bytes() == b"one"  # a later run continues from the stored copy
            local.write_bytes(b"two")
        assert (bucket / "tuning.db").read_bytes() == b"two"

    def test_a_reachable_bucket_passes(self, bucket):
        check_reachable(bucket)


class TestUnreachable:
    """A job on a store it cannot use stops at start, in one line naming the URL and what is missing."""

    def test_missing_credentials(self, object_store_env, monkeypatch):
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        with pytest.raises(StorageError, match=r"^s3a://b/recsys: no S3 credentials \(set AWS_ACCESS_KEY_ID"):
            check_reachable(Location.of("s3a://b/recsys"))

    def test_missing_bucket(self, object_store_env):
        with pytest.raises(StorageError, match="^s3a://no-such-bucket/recsys: bucket 'no-such-bucket' does not exist"):
            check_reachable(Location.of("s3a://no-such-bucket/recsys"))

    def test_store_down(self, object_store_env, monkeypatch):
        monkeypatch.setenv("RECSYS__STORAGE__S3__ENDPOINT", f'"http://127.0.0.1:{_closed_port()}"')
        with pytest.raises(StorageError, match=r"^s3a://b/recsys: store unreachable at http://127\.0\.0\.1:"):
            check_reachable(Location.of("s3a://b/recsys"))

    def test_a_job_stops_with_one_line(self, object_store_env, monkeypatch, capsys, tmp_path):
        monkeypatch.chdir(tmp_path)  # where a Path() around the URL would have made a folder "s3a:"
        with pytest.raises(SystemExit) as stopped:
            cli.data_paths({"data_dir": "var"}, "s3a://no-such-bucket/recsys")
        message = str(stopped.value.code)
        assert message.startswith("error: s3a://no-such-bucket/recsys: bucket") and "\n" not in message
        assert list(tmp_path.iterdir()) == []


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
