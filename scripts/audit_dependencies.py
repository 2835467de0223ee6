"""Known vulnerabilities in what we install: ``make audit``.

Runs pip-audit (from its own virtualenv, so its dependencies are not audited with
ours) on
- the project's virtualenv, i.e. the pins of pyproject.toml and everything they
  pulled in (``--path``: exactly what is installed, transitive ones included);
- airflow_dags/requirements.txt, a complete ``pip freeze`` (``--no-deps``).

Exit status: 1 when a vulnerability has a fixed version to move to; 2 when a package
could not be checked (pip-audit reports those as skipped and would otherwise pass:
its default service needs pypi.org's per-version JSON API); 0 otherwise, with
vulnerabilities that have no fix yet listed as warnings.

``--probe`` only asks whether that API answers (standard library only, so it runs
before the audit's virtualenv exists): exit 0 if it does, 3 with the reason if not.
``make test`` runs the audit when the probe passes and prints the reason when not:
a CI machine that reaches only the package download paths (as this project's own
does) cannot audit, and a note says so instead of a red build that no code change
could fix.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_REQUIREMENTS = PROJECT_ROOT / "airflow_dags" / "requirements.txt"
# A per-version JSON document, as pip-audit's default service asks for one per package.
PROBE_URL = "https://pypi.org/pypi/pip/24.0/json"
UNREACHABLE = 3
# Vulnerability ids reviewed and accepted, with why; passed to pip-audit --ignore-vuln.
ACCEPTED: dict[str, str] = {}


def site_packages(venv_python: Path) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run([str(venv_python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def run_pip_audit(pip_audit: str, source_args: list[str], timeout: int) -> dict:
    """pip-audit's JSON report for one source (a venv path or a requirements file)."""
    ignored = [arg for vuln in ACCEPTED for arg in ("--ignore-vuln", vuln)]
    command = [pip_audit, *source_args, "--format", "json", "--progress-spinner", "off",
               "--skip-editable", "--timeout", str(timeout), *ignored]
    result = subprocess.run(command, capture_output=True, text=True)
    if not result.stdout.strip():  # pip-audit failed before reporting (network, bad input)
        sys.exit(f"pip-audit failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def is_unchecked(dep: dict) -> bool:
    """Skipped by pip-audit, other than this project itself (installed editable)."""
    return "skip_reason" in dep and "editable" not in dep["skip_reason"]


def summarise(label: str, report: dict) -> tuple[list[str], list[str], list[str]]:
    """(fixable, unfixed, unchecked) lines for one report."""
    fixable, unfixed, skipped = [], [], []
    for dep in report["dependencies"]:
        name = f"{label}: {dep['name']} {dep.get('version', '')}".rstrip()
        if is_unchecked(dep):
            skipped.append(f"{name}: {dep['skip_reason']}")
        for vuln in dep.get("vulns", []):
            ids = ", ".join([vuln["id"], *vuln.get("aliases", [])])
            if vuln["fix_versions"]:
                fixable.append(f"{name}: {ids}; fixed in {', '.join(vuln['fix_versions'])}")
            else:
                unfixed.append(f"{name}: {ids}; no fixed version yet")
    return fixable, unfixed, skipped


def probe(url: str, timeout: int) -> int:
    """0 if ``url`` answers 200 with JSON; else UNREACHABLE, saying why."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            json.load(response)
        return 0
    except (urllib.error.URLError, OSError, ValueError) as error:  # HTTPError is a URLError
        print(f"dependency audit skipped: {url} did not answer ({error}); "
              "pip-audit needs pypi.org's JSON API (run `make audit` where it answers)")
        return UNREACHABLE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true",
                        help=f"only check that the vulnerability service answers (exit 0, else {UNREACHABLE})")
    parser.add_argument("--probe-url", default=PROBE_URL, help="what --probe fetches")
    parser.add_argument("--pip-audit", default="pip-audit", help="the pip-audit executable")
    parser.add_argument("--venv-python", type=Path, default=PROJECT_ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--requirements", type=Path, action="append",
                        help="a complete pinned requirements file (default: airflow_dags/requirements.txt)")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per HTTP request")
    args = parser.parse_args()
    if args.probe:
        return probe(args.probe_url, args.timeout)

    sources = {".venv": ["--path", site_packages(args.venv_python)]}
    for requirements in args.requirements or [AIRFLOW_REQUIREMENTS]:
        label = str(requirements.relative_to(PROJECT_ROOT)) if requirements.is_relative_to(PROJECT_ROOT) \
            else str(requirements)
        sources[label] = ["--requirement", str(requirements), "--no-deps", "--disable-pip"]
    fixable, unfixed, not_checked = [], [], []
    for label, source_args in sources.items():
        report = run_pip_audit(args.pip_audit, source_args, args.timeout)
        checked = sum("skip_reason" not in dep for dep in report["dependencies"])
        print(f"{label}: {checked} of {len(report['dependencies'])} packages checked")
        for total, found in zip((fixable, unfixed, not_checked), summarise(label, report)):
            total += found
    for title, lines in (("vulnerable, with a fix", fixable), ("vulnerable, no fix yet", unfixed),
                         ("not checked", not_checked)):
        if lines:
            print(f"\n{title} ({len(lines)}):", *lines, sep="\n  ")
    if fixable:
        return 1
    if not_checked:
        print("\nnot every package could be checked: is pypi.org's JSON API reachable?", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
