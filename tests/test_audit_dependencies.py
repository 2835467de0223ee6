"""scripts/audit_dependencies.py (``make audit``) decides on pip-audit's report: a
fake pip-audit stands in for the real one, which needs the network. Its probe, which
decides whether ``make test`` audits, asks a local HTTP server."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from schemas.settings import PROJECT_ROOT

CLEAN = {"name": "flask", "version": "3.1.3", "vulns": []}
FIXABLE = {"name": "werkzeug", "version": "3.0.0",
           "vulns": [{"id": "GHSA-xxxx", "aliases": ["CVE-2099-1"], "fix_versions": ["3.0.6"]}]}
UNFIXED = {"name": "lmdb", "version": "3.0.0", "vulns": [{"id": "PYSEC-yyyy", "aliases": [], "fix_versions": []}]}
UNREACHABLE = {"name": "orjson", "skip_reason": "Dependency not found on PyPI and could not be audited: orjson (3.13.0)"}
OURS = {"name": "recsys-spine", "skip_reason": "distribution marked as editable"}


def run_audit(tmp_path, dependencies: list[dict]) -> subprocess.CompletedProcess:
    fake = tmp_path / "pip-audit"
    fake.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps({'dependencies': dependencies}))})\n")
    fake.chmod(0o755)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("flask==3.1.3\n")
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "audit_dependencies.py"),
                           "--pip-audit", str(fake), "--venv-python", sys.executable,
                           "--requirements", str(requirements)],
                          capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.parametrize("dependencies, status", [
    ([CLEAN, OURS], 0),
    ([CLEAN, UNFIXED], 0),              # listed, but nothing to upgrade to
    ([CLEAN, FIXABLE, UNFIXED], 1),
    ([CLEAN, UNREACHABLE], 2),          # pip-audit alone would pass this
    ([FIXABLE, UNREACHABLE], 1),
])
def test_exit_status(tmp_path, dependencies, status):
    result = run_audit(tmp_path, dependencies)
    assert result.returncode == status, result.stdout + result.stderr


def test_report_names_the_fix(tmp_path):
    out = run_audit(tmp_path, [FIXABLE, UNFIXED]).stdout
    assert "werkzeug 3.0.0: GHSA-xxxx, CVE-2099-1; fixed in 3.0.6" in out
    assert "lmdb 3.0.0: PYSEC-yyyy; no fixed version yet" in out


class _PypiStandIn(BaseHTTPRequestHandler):
    """JSON for /ok, a 404 (as pypi.org's JSON API answers this project's CI) for the rest."""

    def do_GET(self):
        found = self.path == "/ok"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"info": {}}' if found else b"{}")

    def log_message(self, *_args):
        pass


@pytest.fixture
def pypi_stand_in():
    server = HTTPServer(("127.0.0.1", 0), _PypiStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path, status", [("/ok", 0), ("/pypi/pip/24.0/json", 3)])
def test_probe_says_whether_the_service_answers(pypi_stand_in, path, status):
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "audit_dependencies.py"),
                             "--probe", "--probe-url", pypi_stand_in + path, "--timeout", "5"],
                            capture_output=True, text=True)
    assert result.returncode == status, result.stdout + result.stderr
    assert ("dependency audit skipped" in result.stdout) == (status != 0)
    if status:
        assert "HTTP Error 404" in result.stdout, result.stdout


def test_probe_of_a_closed_port_is_unreachable():
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "audit_dependencies.py"),
                             "--probe", "--probe-url", "http://127.0.0.1:9/", "--timeout", "5"],
                            capture_output=True, text=True)
    assert result.returncode == 3 and "Connection refused" in result.stdout, result.stdout
