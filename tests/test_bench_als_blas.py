"""bench/als_blas's summary and report: pure Python, no Spark, no timings asserted."""
from __future__ import annotations

import pytest

from bench.als_blas.__main__ import PTHREAD, SERIAL, markdown, summary


def _run(folder: str, *fits: tuple[float, float]) -> dict:
    return {"library_path": folder, "libblas": [f"{folder}/libblas.so.3"], "pairs": 100,
            "fits": [{"seconds": s, "cpu_seconds": c} for s, c in fits]}


def test_summary_takes_medians_of_the_warm_fits_only():
    """The first fit of each JVM is its warm-up: reported apart, never in the medians."""
    runs = [_run(SERIAL, (90.0, 170.0), (40.0, 75.0), (42.0, 77.0)),
            _run(PTHREAD, (95.0, 180.0), (50.0, 90.0), (48.0, 88.0)),
            _run(PTHREAD, (99.0, 185.0), (52.0, 96.0), (46.0, 86.0)),
            _run(SERIAL, (80.0, 160.0), (44.0, 79.0), (38.0, 70.0))]
    result = summary(runs)
    serial, pthread = result["builds"]["serial"], result["builds"]["pthread"]
    assert serial["runs"] == pthread["runs"] == 2
    assert serial["median_seconds"] == pytest.approx(41.0) and pthread["median_seconds"] == pytest.approx(49.0)
    assert serial["median_cpu_seconds"] == pytest.approx(76.0)
    assert serial["median_first_fit_seconds"] == pytest.approx(85.0)
    assert serial["libblas"] == [f"{SERIAL}/libblas.so.3"]
    assert result["ratio_pthread_over_serial"] == pytest.approx(49.0 / 41.0, abs=0.01)


def test_summary_without_one_build_has_no_ratio_and_the_report_says_so():
    result = summary([_run(SERIAL, (90.0, 170.0), (40.0, 75.0))])
    assert result["builds"]["pthread"]["runs"] == 0 and result["ratio_pthread_over_serial"] is None
    report = markdown({"data": {"users": 10, "items": 5, "pairs": 100}, "rank": 8, "iterations": 2, "fits": 2,
                       "pairs": 1, "runs": [_run(SERIAL, (90.0, 170.0), (40.0, 75.0))], "summary": result,
                       "machine_line": "Machine: test."})
    assert "| pthread | - | - | - | - |" in report and "pthread / serial: - (a build has no runs)." in report
    assert "- openblas-serial: 90.0 (170.0), 40.0 (75.0)" in report
