"""`nba report` over an export directory: the numbers, the intervals, the HTML and the plots."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nba_service.cli import main
from nba_service.report import ReportError, build_report, katz_lift, wilson


def test_wilson_matches_the_published_values() -> None:
    # Newcombe (1998), table I: 0/10 -> 0 .. 0.2775; 5/10 -> 0.2366 .. 0.7634.
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))
    lo90, hi90 = wilson(30, 100, 0.90)
    lo99, hi99 = wilson(30, 100, 0.99)
    assert lo99 < lo90 < 0.3 < hi90 < hi99


def test_katz_lift_interval() -> None:
    lift, lo, hi = katz_lift(60, 1000, 30, 1000)
    assert lift == pytest.approx(1.0)
    # RR 2, SE of log RR = sqrt(1/60 - 1/1000 + 1/30 - 1/1000) = 0.2191
    assert lo == pytest.approx(math.exp(math.log(2) - 1.959964 * 0.21909) - 1, rel=1e-3)
    assert hi == pytest.approx(math.exp(math.log(2) + 1.959964 * 0.21909) - 1, rel=1e-3)
    assert math.isnan(katz_lift(5, 100, 0, 100)[0])  # no control responses: undefined


def _write(root: Path, action: str, channel: str, labels: list[int], control: list[bool],
           value: float) -> None:
    folder = root / "impressions" / "date=2025-03-01" / f"decision_channel={channel}"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    pq.write_table(pa.table({
        "logged_action_id": [action] * n, "logged_channel": [channel] * n,
        "label": pa.array(labels, pa.int8()), "outcome_value": [value * x for x in labels],
        "reward": [float(x) for x in labels], "control_group": control,
    }), folder / f"part-{action}.parquet")


def test_report_table_html_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "export"
    # card_gold on WEB: treated 40/200, control 10/100 -> lift +100 %.
    _write(data, "card_gold", "WEB", [1] * 40 + [0] * 160 + [1] * 10 + [0] * 90,
           [False] * 200 + [True] * 100, 25.0)
    _write(data, "savings_bonus", "EMAIL", [1] * 3 + [0] * 97, [False] * 100, 0.0)
    result = build_report(data, tmp_path / "report")
    by = {(r.action_id, r.channel): r for r in result.rows}
    gold = by[("card_gold", "WEB")]
    assert (gold.impressions, gold.responses, gold.control_impressions) == (200, 40, 100)
    assert gold.rate == pytest.approx(0.2) and gold.control_rate == pytest.approx(0.1)
    assert gold.value == pytest.approx(40 * 25.0)
    assert gold.lift == pytest.approx(1.0) and gold.lift_low < 1.0 < gold.lift_high
    assert (gold.rate_low, gold.rate_high) == pytest.approx(wilson(40, 200))
    savings = by[("savings_bonus", "EMAIL")]
    assert savings.control_impressions == 0 and math.isnan(savings.lift)

    html = result.html.read_text()
    for p in result.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.name in html
    assert {p.name for p in result.plots} == {
        "response_rate_WEB.png", "response_rate_EMAIL.png", "lift.png"}

    assert main(["report", "--data", str(data), "--out", str(tmp_path / "r2")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("card_gold"))
    assert "200" in line and "20.0%" in line and "100.0%" in line
    assert (tmp_path / "r2" / "report.html").is_file()


def test_report_without_an_export_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="impressions"):
        build_report(tmp_path, tmp_path / "out")
    assert main(["report", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
