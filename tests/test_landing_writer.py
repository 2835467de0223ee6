"""The collector's landing writer: durable appends, rotation, crash recovery."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lookup_server.collector import landing_writer as lw
from lookup_server.collector.landing_writer import LandingWriter, recover, visible_name
from tests.collector_fixtures import dead_pid
from tests.lookup_fixtures import wait_until

HOST = "testhost-1"  # a '-' in the host name must not confuse the name parser


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def visible_files(folder):
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def hidden_files(folder):
    return sorted(folder.glob(".collector-*.jsonl.open"))


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def rows(n, start=0):
    return [{"user_id": i, "event_type": "view", "product_id": 7, "timestamp": "2026-01-01T00:00:00+00:00"}
            for i in range(start, start + n)]


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "landing" / "events"


def test_append_is_durable_in_a_hidden_file_until_closed(folder):
    writer = LandingWriter(folder, host=HOST)
    writer.append(rows(2))
    writer.append(rows(1, start=2))
    hidden = writer.open_path
    assert hidden.name.startswith(f".collector-{HOST}-{os.getpid()}-") and hidden.name.endswith(".jsonl.open")
    assert visible_files(folder) == []  # the ingest sees nothing yet
    assert [r["user_id"] for r in lines(hidden)] == [0, 1, 2]

    writer.close()
    published = visible_files(folder)
    assert published == [visible_name(hidden)]
    assert published[0].name.startswith(f"collector-{HOST}-") and published[0].suffix == ".jsonl"
    assert [r["user_id"] for r in lines(published[0])] == [0, 1, 2]
    assert hidden_files(folder) == []
    writer.close()  # idempotent
    assert len(visible_files(folder)) == 1


def test_rotation_by_size(folder):
    one_row = len(lw.encode_rows(rows(1)))
    writer = LandingWriter(folder, rotate_bytes=3 * one_row, host=HOST)
    writer.append(rows(2))
    assert visible_files(folder) == []
    writer.append(rows(1, start=2))  # reaches 3 rows' worth: published at once
    assert len(visible_files(folder)) == 1 and writer.open_path is None
    writer.append(rows(1, start=3))
    writer.close()
    first, second = visible_files(folder)
    assert [r["user_id"] for r in lines(first)] == [0, 1, 2]
    assert [r["user_id"] for r in lines(second)] == [3]
    # the sequence part sorts the files of one process in writing order
    assert int(first.stem.rsplit("-", 1)[1]) < int(second.stem.rsplit("-", 1)[1])


def test_rotation_by_age_on_write_and_on_check(folder):
    clock = FakeClock()
    writer = LandingWriter(folder, rotate_seconds=60, clock=clock, host=HOST, auto_rotate=False)
    writer.append(rows(1))
    clock.now += 59
    assert writer.maybe_rotate() is False
    writer.append(rows(1, start=1))
    clock.now += 1
    assert writer.maybe_rotate() is True  # what the rotation thread does for an idle worker
    assert [[r["user_id"] for r in lines(p)] for p in visible_files(folder)] == [[0, 1]]
    assert writer.maybe_rotate() is False  # nothing open

    writer.append(rows(1, start=2))
    clock.now += 61
    writer.append(rows(1, start=3))  # the due file is published before this batch goes in
    assert [[r["user_id"] for r in lines(p)] for p in visible_files(folder)] == [[0, 1], [2]]
    writer.close()
    assert [[r["user_id"] for r in lines(p)] for p in visible_files(folder)] == [[0, 1], [2], [3]]


def test_the_rotation_thread_publishes_an_idle_file(folder, monkeypatch):
    monkeypatch.setattr(lw, "ROTATOR_INTERVAL_SECONDS", 0.05)
    writer = LandingWriter(folder, rotate_seconds=0.3, host=HOST)
    writer.append(rows(2))
    wait_until(lambda: visible_files(folder), timeout=10, message="the idle file published")
    assert [r["user_id"] for r in lines(visible_files(folder)[0])] == [0, 1]
    assert hidden_files(folder) == [] and writer.open_path is None


def test_failed_write_leaves_only_acknowledged_rows(folder, monkeypatch):
    writer = LandingWriter(folder, host=HOST)
    writer.append(rows(2))

    def broken_fsync(fd):
        raise OSError(5, "I/O error")

    real_fsync = os.fsync
    monkeypatch.setattr(lw.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        writer.append(rows(3, start=2))
    monkeypatch.setattr(lw.os, "fsync", real_fsync)
    # the failed batch was cut off again; the file was given up on (published or left to recovery)
    recover(folder, host=HOST)
    writer.append(rows(1, start=5))
    writer.close()
    assert sorted(r["user_id"] for p in visible_files(folder) for r in lines(p)) == [0, 1, 5]


def test_recovery_cuts_the_partial_line_of_a_dead_process(folder):
    folder.mkdir(parents=True)
    pid = dead_pid()
    hidden = folder / f".collector-{HOST}-{pid}-1700000000000.jsonl.open"
    complete = lw.encode_rows(rows(2))
    hidden.write_bytes(complete + b'{"user_id": 2, "event_ty')

    assert recover(folder, host=HOST) == [folder / f"collector-{HOST}-{pid}-1700000000000.jsonl"]
    (published,) = visible_files(folder)
    assert published.read_bytes() == complete
    assert [r["user_id"] for r in lines(published)] == [0, 1]
    assert hidden_files(folder) == []
    assert recover(folder, host=HOST) == []  # nothing twice


def test_recovery_leaves_live_processes_and_other_hosts_alone(folder):
    folder.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live_file = folder / f".collector-{HOST}-{live.pid}-1.jsonl.open"
        other_host = folder / f".collector-elsewhere-{dead_pid()}-1.jsonl.open"
        for path in (live_file, other_host):
            path.write_bytes(lw.encode_rows(rows(1)))
        mine = LandingWriter(folder, host=HOST)
        mine.append(rows(1))  # this process's own open file is not "dead" either

        assert recover(folder, host=HOST) == []
        assert set(hidden_files(folder)) == {live_file, other_host, mine.open_path}

        # the master before it starts workers: everything but what this process has open
        assert sorted(p.name for p in recover(folder, recover_all=True, host=HOST)) == sorted(
            visible_name(p).name for p in (live_file, other_host))
        assert hidden_files(folder) == [mine.open_path]
        mine.close()
    finally:
        live.kill()
        live.wait()


def test_recovery_removes_a_file_without_a_complete_line(folder):
    folder.mkdir(parents=True)
    hidden = folder / f".collector-{HOST}-{dead_pid()}-1.jsonl.open"
    hidden.write_bytes(b'{"user_id": 1')
    assert recover(folder, host=HOST) == []
    assert hidden_files(folder) == [] and visible_files(folder) == []


def test_files_of_a_process_are_published_at_exit(tmp_path):
    """A process that exits normally publishes its open file (atexit)."""
    folder = tmp_path / "events"
    code = ("import sys; from lookup_server.collector.landing_writer import LandingWriter; "
            "w = LandingWriter(sys.argv[1]); w.append([{'a': 1}, {'a': 2}])")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    (published,) = visible_files(folder)
    assert lines(published) == [{"a": 1}, {"a": 2}]
    assert hidden_files(folder) == []
