"""The lookup server never pulls in Spark or the batch jobs (it must start in milliseconds)."""
from __future__ import annotations

import ast
import subprocess
import sys

from schemas.settings import PROJECT_ROOT

FORBIDDEN = ("pyspark", "py4j", "jobs")


def test_no_forbidden_import_statements():
    """No module of lookup_server imports pyspark or jobs, even lazily inside a function."""
    sources = sorted((PROJECT_ROOT / "lookup_server").rglob("*.py"))
    assert sources
    offenders = []
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{source.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_building_the_app_loads_no_forbidden_module():
    """In a fresh interpreter, importing lookup_server and building the app loads none of them."""
    code = ("import sys, lookup_server, lookup_server.__main__; lookup_server.create_app(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
