"""jobs.publish_snapshot: a built snapshot reaches the servers' folder whole, or not at all."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jobs import publish_snapshot
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import (CURRENT_POINTER, DATA_FILE, SnapshotFormatError, read_current_version,
                              verify_snapshot_dir)
from schemas.storage import Location
from tests.lookup_fixtures import flip_data_byte
from tests.lookup_fixtures import publish_snapshot as build_and_publish

@pytest.fixture
def data_dir(tmp_path):
    """A data dir whose build folder has published two versions, v2 in CURRENT."""
    build_and_publish(tmp_path / "snapshots", "20261030T000000000000Z")
    build_and_publish(tmp_path / "snapshots", "20261031T000000000000Z")
    return tmp_path


def run_main(capsys, *args: str) -> dict:
    assert publish_snapshot.main(list(args)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_publishes_the_built_current_version(data_dir, capsys):
    """The version the build folder's CURRENT names is copied, verified and put in service at the target."""
    target = data_dir / "serving"
    result = run_main(capsys, "--data-dir", str(data_dir), "--target", str(target))
    assert result["version"] == "20261031T000000000000Z" and result["copied"] and result["previous"] is None
    assert read_current_version(target) == "20261031T000000000000Z"
    assert verify_snapshot_dir(target / "20261031T000000000000Z").version == "20261031T000000000000Z"
    assert sorted(p.name for p in target.iterdir()) == ["20261031T000000000000Z", CURRENT_POINTER]


def test_default_target_comes_from_conf(data_dir, capsys, monkeypatch):
    """Without --target the job uses [publish] target, relative to the data dir."""
    monkeypatch.setenv("RECSYS__JOBS__PUBLISH__TARGET", "servers/snapshots")
    result = run_main(capsys, "--data-dir", str(data_dir))
    assert result["target"] == str(data_dir / "servers" / "snapshots")
    assert read_current_version(data_dir / "servers" / "snapshots") == "20261031T000000000000Z"


def test_republishing_is_idempotent(data_dir, capsys):
    """A second run of the same publish finds the version there, copies nothing, changes nothing."""
    target = data_dir / "serving"
    run_main(capsys, "--data-dir", str(data_dir), "--target", str(target))
    before = (target / "20261031T000000000000Z" / DATA_FILE).stat().st_mtime_ns
    again = run_main(capsys, "--data-dir", str(data_dir), "--target", str(target))
    assert again["copied"] is False and again["previous"] == "20261031T000000000000Z"
    assert read_current_version(target) == "20261031T000000000000Z"
    assert (target / "20261031T000000000000Z" / DATA_FILE).stat().st_mtime_ns == before


def test_broken_copy_at_target_is_replaced(data_dir, capsys):
    """A damaged copy of the version at the target is copied again, not served."""
    target = data_dir / "serving"
    run_main(capsys, "--data-dir", str(data_dir), "--target", str(target))
    flip_data_byte(target / "20261031T000000000000Z")
    again = run_main(capsys, "--data-dir", str(data_dir), "--target", str(target))
    assert again["copied"] is True
    verify_snapshot_dir(target / "20261031T000000000000Z")


def test_corrupt_build_is_refused_and_the_served_one_stays(data_dir, capsys):
    """A build whose data file fails its checksum never reaches the target; CURRENT there is unchanged."""
    target = data_dir / "serving"
    run_main(capsys, "--data-dir", str(data_dir), "--target", str(target), "--version", "20261030T000000000000Z")
    flip_data_byte(data_dir / "snapshots" / "20261031T000000000000Z")
    with pytest.raises(publish_snapshot.SnapshotFormatError, match="checksum"):
        publish_snapshot.main(["--data-dir", str(data_dir), "--target", str(target)])
    assert read_current_version(target) == "20261030T000000000000Z"
    assert sorted(p.name for p in target.iterdir()) == ["20261030T000000000000Z", CURRENT_POINTER]


def test_rollback_and_pruning(tmp_path, capsys, monkeypatch):
    """--version publishes an older build (rollback); the target keeps keep_versions plus the one in service."""
    versions = [f"2026103{d}T000000000000Z" for d in range(5)]
    for version in versions:
        build_and_publish(tmp_path / "snapshots", version)
    target = tmp_path / "serving"
    monkeypatch.setenv("RECSYS__JOBS__PUBLISH__KEEP_VERSIONS", "2")
    for version in versions:
        run_main(capsys, "--data-dir", str(tmp_path), "--target", str(target), "--version", version)
    assert read_current_version(target) == versions[-1]
    assert sorted(p.name for p in target.iterdir() if p.is_dir()) == versions[-2:]
    rolled_back = run_main(capsys, "--data-dir", str(tmp_path), "--target", str(target), "--version", versions[0])
    assert rolled_back["copied"] and read_current_version(target) == versions[0]
    assert sorted(p.name for p in target.iterdir() if p.is_dir()) == [versions[0], *versions[-2:]]


def test_leftover_incoming_folder_is_cleaned(data_dir, capsys):
    """A copy interrupted by a crash (a hidden .incoming- folder) is never served and is removed by the next publish."""
    target = data_dir / "serving"
    (target / ".incoming-20261029T000000000000Z" / "20261029T000000000000Z").mkdir(parents=True)
    run_main(capsys, "--data-dir", str(data_dir), "--target", str(target))
    assert not list(target.glob(".incoming-*"))
    assert read_current_version(target) == "20261031T000000000000Z"


def test_nothing_built_is_an_error(tmp_path):
    """With no CURRENT in the build folder there is nothing to publish, and the job says so."""
    with pytest.raises(publish_snapshot.NothingToPublishError, match="build_snapshot"):
        publish_snapshot.main(["--data-dir", str(tmp_path), "--target", str(tmp_path / "serving")])
    assert not (tmp_path / "serving" / CURRENT_POINTER).exists()


def test_runs_as_a_script_with_help():
    """``python jobs/publish_snapshot.py --help`` works, as spark-submit runs it."""
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "jobs" / "publish_snapshot.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--target" in done.stdout and "--as-of" in done.stdout and "--data-dir" in done.stdout


class TestObjectStore:
    """The same promises on a real S3 API (scripts/objectstore on loopback), through pyarrow."""

    def test_files_then_current_and_a_rerun_copies_nothing(self, data_dir, object_store_env, capsys, tmp_path):
        bucket = object_store_env.new_bucket()
        target = f"s3a://{bucket}/recsys/snapshots"
        results = [run_main(capsys, "--data-dir", str(data_dir), "--target", target) for _ in range(2)]
        assert [r["copied"] for r in results] == [True, False]
        published = Location.of(target)
        assert published.children() == ["20261031T000000000000Z", CURRENT_POINTER]
        (published / "20261031T000000000000Z").download_dir(tmp_path / "pulled" / "20261031T000000000000Z")
        (tmp_path / "pulled" / CURRENT_POINTER).write_bytes((published / CURRENT_POINTER).read_bytes())
        assert read_current_version(tmp_path / "pulled") == "20261031T000000000000Z"
        verify_snapshot_dir(tmp_path / "pulled" / "20261031T000000000000Z")

    def test_rollback_and_pruning(self, data_dir, object_store_env, capsys):
        target = f"s3://{object_store_env.new_bucket()}/snapshots"
        run_main(capsys, "--data-dir", str(data_dir), "--target", target, "--version", "20261030T000000000000Z")
        run_main(capsys, "--data-dir", str(data_dir), "--target", target)
        rolled_back = run_main(capsys, "--data-dir", str(data_dir), "--target", target,
                               "--version", "20261030T000000000000Z")
        assert rolled_back["copied"] is False and rolled_back["previous"] == "20261031T000000000000Z"
        assert (Location.of(target) / CURRENT_POINTER).read_text().strip() == "20261030T000000000000Z"
        pruned = publish_snapshot.publish_snapshot(data_dir / "snapshots",
                                                             publish_snapshot.open_target(target, data_dir),
                                                             keep_versions=1)
        assert pruned["pruned"] == ["20261030T000000000000Z"]

    def test_a_build_on_the_object_store_is_published_from_there(self, data_dir, object_store_env, capsys, tmp_path):
        """An s3a:// data dir: its snapshots folder is read back, verified, then shipped."""
        remote = Location.of(f"s3a://{object_store_env.new_bucket()}/recsys")
        (remote / "snapshots").upload_dir(data_dir / "snapshots")
        result = run_main(capsys, "--data-dir", str(remote), "--target", str(tmp_path / "serving"))
        assert result["version"] == "20261031T000000000000Z" and result["copied"] is True
        verify_snapshot_dir(tmp_path / "serving" / "20261031T000000000000Z")

    def test_a_corrupt_build_on_the_object_store_is_refused(self, data_dir, object_store_env, tmp_path):
        flip_data_byte(data_dir / "snapshots" / "20261031T000000000000Z")
        remote = Location.of(f"s3a://{object_store_env.new_bucket()}/recsys")
        (remote / "snapshots").upload_dir(data_dir / "snapshots")
        with pytest.raises(SnapshotFormatError):
            publish_snapshot.main(["--data-dir", str(remote), "--target", str(tmp_path / "serving")])
        assert not (tmp_path / "serving" / CURRENT_POINTER).exists()
