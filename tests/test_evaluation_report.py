"""The evaluation report: files, formatting, escaping, trials and the atomic swap. No Spark."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from jobs.evaluation_report import write_report
from schemas.tables import EVALUATIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
# The columns of an evaluation run (EVALUATIONS without its optional tuning columns).
COLUMNS = ["run_id", "as_of", "evaluated_at", "split", "algorithm", "segment", "metric", "value", "users"]
SEGMENT_USERS = {"new": 17, "light": 230, "heavy": 51, "all": 298}

# Hand-set values the tests look for; every other value is filler in 0.30..0.54.
KNOWN = {
    ("als", "all", "ndcg@10"): 0.2345678,      # best of its column -> bold "0.2346"
    ("popular", "all", "ndcg@10"): 0.1111,     # not best -> plain
    ("hybrid", "all", "ndcg@10"): 0.2222,
    ("als", "heavy", "ndcg@10"): 0.9876,       # highest overall, but not an 'all' row -> plain
    ("hybrid", "heavy", "ndcg@10"): 0.2345678,  # ties the best, but not an 'all' row -> plain
    ("als", "new", "recall@10"): float("nan"),
    ("popular", "all", "fallback_share"): 0.0512,  # lower is better -> bold
    ("als", "all", "fallback_share"): 0.5123,
    ("hybrid", "all", "fallback_share"): 0.2512,
}


def results_frame(algorithms=("popular", "als", "hybrid"), ks=(5, 10, 20), run_id="temporal-2024-05-01",
                  known=KNOWN) -> pd.DataFrame:
    metrics = [f"{m}@{k}" for m in ("ndcg", "recall", "hit_rate", "map", "precision") for k in ks]
    metrics += ["mrr", "coverage@20", "novelty@20", "fallback_share"]
    rows = []
    for a, alg in enumerate(algorithms):
        for s, (segment, users) in enumerate(SEGMENT_USERS.items()):
            for m, metric in enumerate(metrics):
                filler = 0.3 + 0.0001 * (a * 1000 + s * 100 + m)
                rows.append({
                    "run_id": run_id, "as_of": datetime(2024, 5, 1), "evaluated_at": datetime(2024, 5, 1, 3, 7),
                    "split": "temporal", "algorithm": alg, "segment": segment, "metric": metric,
                    "value": known.get((alg, segment, metric), filler), "users": users,
                })
    return pd.DataFrame(rows, columns=COLUMNS)


def trials_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "trial": [0, 1, 2, 3, 4],
        "algorithm": ["als", "als", "als", "hybrid", "hybrid"],
        "params": ['{"rank": 32, "reg": 0.1}', '{"rank": 64, "reg": 0.1}', '{"rank": 16}',
                   '{"w": 0.5}', '{"w": 0.7}'],
        "score": [0.1501, 0.3102, 0.2003, 0.2504, 0.3605],
        "seconds": [12.5, 20.25, 8.0, 3.0, 3.5],
    })


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def trials_rows(page: str) -> list[str]:
    table = page.split('<table class="trials">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1])


@pytest.fixture
def report(tmp_path):
    path = write_report(results_frame(), tmp_path / "report", notes={"data": "synthetic", "k": "10"})
    return path, path.read_text(encoding="utf-8")


def test_writes_html_and_valid_pngs(report):
    path, page = report
    folder = path.parent
    assert path.name == "report.html" and path.is_file()
    expected = {"metric_by_algorithm.png", "by_segment.png", "by_k.png"}
    assert {p.name for p in folder.glob("*.png")} == expected  # no tuning.png without trials
    for name in expected:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5_000, name


def test_every_image_link_is_a_local_file_with_alt_text(report):
    path, page = report
    sources = img_sources(page)
    assert len(sources) == 3
    for src in sources:
        assert "/" not in src and (path.parent / src).is_file()
    assert len(re.findall(r'<img src="[^"]+" alt="[^"]+">', page)) == 3


def test_self_contained(report):
    _, page = report
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page


def test_header_shows_run_and_notes(report):
    _, page = report
    for text in ("temporal-2024-05-01", "temporal", "2024-05-01T00:00:00", "2024-05-01T03:07:00",
                 "<dt>data</dt><dd>synthetic</dd>"):
        assert text in page


def test_values_have_four_significant_digits_and_nan_is_a_dash(report):
    _, page = report
    assert ">0.2346<" in page and "0.2345678" not in page
    assert '<td class="num">\u2013</td>' in page
    assert "nan" not in page.lower()


def test_best_of_all_rows_is_bold_and_only_it(report):
    _, page = report
    assert page.count("<b>0.2346</b>") == 1 and page.count(">0.2346<") == 2
    assert ">0.1111<" in page and "<b>0.1111</b>" not in page
    assert ">0.9876<" in page and "<b>0.9876</b>" not in page  # heavy row: never bold
    assert "<b>0.0512</b>" in page and "<b>0.5123</b>" not in page  # fallback_share: lower wins


def test_table_columns_sorted_by_name_then_k(report):
    _, page = report
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", page).group(1)
    columns = re.findall(r"<th>(.*?)</th>", header)
    assert columns[:3] == ["segment", "users", "algorithm"]
    assert columns.index("ndcg@5") < columns.index("ndcg@10") < columns.index("ndcg@20")
    assert columns.index("mrr") < columns.index("ndcg@5")
    assert len(columns) == 3 + 15 + 4


def test_users_per_segment_in_table_and_plot_order(report):
    _, page = report
    first_row = re.search(r'<tr class="all"><td>all</td><td class="num">298</td><td>popular</td>', page)
    assert first_row is not None
    assert '<tr class="new"><td>new</td><td class="num">17</td>' in page


def test_strings_are_escaped(tmp_path):
    bad = "<script>alert(1)</script>"
    results = results_frame(algorithms=("als", bad), known={})
    page = write_report(results, tmp_path / "r", title="A & B", notes={"<i>": "x > y"}).read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>A &amp; B</title>" in page and "&lt;i&gt;" in page and "x &gt; y" in page


def test_single_k_and_largest_k_rule(tmp_path):
    path = write_report(results_frame(ks=(5,), known={}), tmp_path / "one")
    assert (path.parent / "by_k.png").read_bytes().startswith(PNG_MAGIC)
    page = path.read_text()
    assert "Ranking metrics at k=5" in page and "NDCG@5 per user segment" in page
    page20 = write_report(results_frame(ks=(5, 20), known={}), tmp_path / "two").read_text()
    assert "NDCG@20 per user segment" in page20


def test_unknown_algorithms_sort_after_known_ones(tmp_path):
    page = write_report(results_frame(algorithms=("zeta", "hybrid", "alpha", "popular"), known={}),
                        tmp_path / "r").read_text()
    order = re.findall(r'<tr class="all"><td>all</td><td class="num">\d+</td><td>(.*?)</td>', page)
    assert order == ["popular", "hybrid", "alpha", "zeta"]


def test_trials_plot_and_table_best_first(tmp_path):
    path = write_report(results_frame(), tmp_path / "r", trials=trials_frame())
    assert (path.parent / "tuning.png").read_bytes().startswith(PNG_MAGIC)
    page = path.read_text()
    assert "tuning.png" in img_sources(page)
    rows = trials_rows(page)
    assert len(rows) == 5
    assert "<td>hybrid</td>" in rows[0] and "<b>0.3605</b>" in rows[0]
    als = [r for r in rows if "<td>als</td>" in r]
    assert [re.search(r"0\.\d{4}", r.split("</td>", 2)[2]).group(0) for r in als] == ["0.3102", "0.2003", "0.1501"]
    assert "<b>0.3102</b>" in als[0] and "<b>" not in als[1]
    assert "{&quot;rank&quot;: 64, &quot;reg&quot;: 0.1}" in page


def test_ranker_importance_plot_and_table_by_share_of_gain(tmp_path):
    """Gains become shares of the total, largest first, in the table and the plot; no
    ranker, no section."""
    path = write_report(results_frame(), tmp_path / "r",
                        importance={"age_days": 10.0, "als_score": 30.0, "user_country": 0.0, "price": 60.0})
    assert (path.parent / "importance.png").read_bytes().startswith(PNG_MAGIC)
    page = path.read_text()
    assert "importance.png" in img_sources(page)
    table = page.split("<h2>Ranker feature importance</h2>")[1]
    assert re.findall(r"<td>(\w+)</td><td class=\"num\">([\d.]+)</td>", table) == [
        ("price", "0.6000"), ("als_score", "0.3000"), ("age_days", "0.1000"), ("user_country", "0.0000")]
    plain = write_report(results_frame(), tmp_path / "plain")
    assert not (plain.parent / "importance.png").exists() and "feature importance" not in plain.read_text()


@pytest.mark.parametrize("results, message", [
    (pd.DataFrame(columns=COLUMNS), "empty"),
    (pd.concat([results_frame(), results_frame(run_id="temporal-2024-05-02")]), "run_id"),
    (results_frame().drop(columns=["users"]), "users"),
    (pd.concat([results_frame(), results_frame()]), "several rows"),
])
def test_rejects_bad_results(tmp_path, results, message):
    with pytest.raises(ValueError, match=message):
        write_report(results, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_accepts_plain_runs_and_the_optional_tuning_columns(tmp_path):
    """A plain evaluation run has only the contract's required columns; null tuning columns are fine too."""
    assert COLUMNS == [f.name for f in EVALUATIONS.fields if f.required]
    with_optional = results_frame().reindex(columns=EVALUATIONS.names)
    assert write_report(with_optional, tmp_path / "r").is_file()


def test_rewrite_replaces_folder_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "nested" / "deeper" / "report"
    write_report(results_frame(), out, trials=trials_frame())
    (out / "stale.txt").write_text("old")
    write_report(results_frame(), out)
    assert not (out / "stale.txt").exists()
    assert not (out / "tuning.png").exists()  # the second run had no trials
    assert (out / "report.html").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["report"]


def test_no_pyspark_and_no_pyplot(tmp_path):
    """The report runs where Spark is not installed and leaves pyplot's global state alone."""
    code = ("import sys; from pathlib import Path; from tests.test_evaluation_report import results_frame; "
            "from jobs.evaluation_report import write_report; "
            f"write_report(results_frame(), Path({str(tmp_path / 'r')!r})); "
            "bad = [m for m in ('pyspark', 'matplotlib.pyplot') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
