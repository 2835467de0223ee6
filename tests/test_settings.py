"""conf/*.toml through schemas.settings: from the checkout, from the shipped zip, overridden."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from schemas.settings import PROJECT_ROOT, load_conf

# Imports schemas.settings from the zip alone (it comes first on the path) and prints
# where from, with the top_n it loads.
PROBE = ("import json, sys; sys.path.insert(0, sys.argv[1]); import schemas.settings as s; "
         "print(json.dumps([s.__file__, s.load_conf('jobs')['popularity']['top_n']]))")


@pytest.fixture()
def shipped(tmp_path: Path) -> Path:
    """A zip laid out as make dist-jobs lays it out, its conf/jobs.toml with top_n = 7."""
    archive = tmp_path / "recsys_jobs.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        for source in (PROJECT_ROOT / "schemas").glob("*.py"):
            zip_file.write(source, f"schemas/{source.name}")
        zip_file.writestr("conf/jobs.toml", "[popularity]\ntop_n = 7\n")
    return archive


def probe(archive: Path, cwd: Path, **env: str) -> list:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS", "PYTHONPATH"))}
    done = subprocess.run([sys.executable, "-c", PROBE, str(archive)], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_checkout_conf_is_beside_the_packages(monkeypatch):
    """Without RECSYS_CONF_DIR the checkout's conf/ is read."""
    monkeypatch.delenv("RECSYS_CONF_DIR", raising=False)
    with open(PROJECT_ROOT / "conf" / "jobs.toml", "rb") as fh:
        assert load_conf("jobs", environ={}) == tomllib.load(fh)


def test_conf_is_read_from_the_zip_it_was_imported_from(shipped, tmp_path):
    """Imported from a zip, the settings come from the zip's conf/, not a folder."""
    origin, top_n = probe(shipped, tmp_path)
    assert origin == f"{shipped}/schemas/settings.py" and top_n == 7


def test_conf_dir_and_environment_win_over_the_zip(shipped, tmp_path):
    """RECSYS_CONF_DIR still points elsewhere, and a RECSYS__ variable overrides one key."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "jobs.toml").write_text("[popularity]\ntop_n = 11\n")
    assert probe(shipped, tmp_path, RECSYS_CONF_DIR=str(tmp_path / "conf"))[1] == 11
    assert probe(shipped, tmp_path, RECSYS__JOBS__POPULARITY__TOP_N="13")[1] == 13


def test_a_missing_conf_file_names_it(shipped, tmp_path):
    """An absent conf file in the zip fails with the file's name, not a directory error."""
    done = subprocess.run([sys.executable, "-c", PROBE.replace("'jobs'", "'nope'"), str(shipped)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "FileNotFoundError" in done.stderr and "conf/nope.toml" in done.stderr
