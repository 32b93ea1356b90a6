"""`nba report`: what the decisions achieved, per action and channel, from an export directory.

Reads `DIR/impressions` (written by `nba logs export`: labelled, windows closed) and reports per
(action, channel): impressions, responses, the response rate with its Wilson score interval,
the summed outcome value and mean reward, and the lift of the model-driven impressions over the
control group's:

    lift = rate(treated) / rate(control) - 1

with a confidence interval from the Katz log method for a ratio of two binomial proportions
(exp(log RR +- z * sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2))); with zero responses in either arm the
interval is undefined and shown as "n/a". Rows without control impressions have no lift.
Deterministic: no resampling, so the same export always gives the same report.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow.dataset as ds

__all__ = ["ReportError", "ReportResult", "Row", "build_report", "katz_lift", "wilson"]


class ReportError(ValueError):
    """The input is not an export directory, or holds no impressions."""


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (well-behaved at 0 and 1, small n)."""
    if n == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def katz_lift(
    x1: int, n1: int, x0: int, n0: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(lift, low, high) of treated (x1/n1) over control (x0/n0); NaN where undefined."""
    if n1 == 0 or n0 == 0 or x0 == 0:
        return (math.nan, math.nan, math.nan)
    rr = (x1 / n1) / (x0 / n0)
    if x1 == 0:
        return (rr - 1, math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
    return (rr - 1, math.exp(math.log(rr) - z * se) - 1, math.exp(math.log(rr) + z * se) - 1)


@dataclass(frozen=True)
class Row:
    action_id: str
    channel: str
    impressions: int
    responses: int
    rate: float
    rate_low: float
    rate_high: float
    value: float
    mean_reward: float
    control_impressions: int
    control_rate: float
    lift: float
    lift_low: float
    lift_high: float


@dataclass(frozen=True)
class ReportResult:
    rows: list[Row]
    text: str
    html: Path
    plots: list[Path]


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def summarise(data_dir: Path, confidence: float = 0.95) -> list[Row]:
    root = Path(data_dir) / "impressions"
    if not root.is_dir():
        raise ReportError(f"{data_dir}: no impressions/ (run `nba logs export --out` first)")
    table = ds.dataset(root, partitioning="hive").to_table(
        columns=["logged_action_id", "logged_channel", "label", "outcome_value", "reward",
                 "control_group"])
    if table.num_rows == 0:
        raise ReportError(f"{root}: no impressions yet")
    grouped = table.group_by(["logged_action_id", "logged_channel", "control_group"]).aggregate(
        [("label", "count"), ("label", "sum"), ("outcome_value", "sum"), ("reward", "sum")])
    stats: dict[tuple[str, str], dict[bool, tuple[int, int, float, float]]] = {}
    for r in grouped.to_pylist():
        key = (str(r["logged_action_id"]), str(r["logged_channel"]))
        stats.setdefault(key, {})[bool(r["control_group"])] = (
            int(r["label_count"]), int(r["label_sum"] or 0), float(r["outcome_value_sum"] or 0),
            float(r["reward_sum"] or 0))
    rows = []
    for (aid, ch), arms in sorted(stats.items()):
        n1, x1, v1, w1 = arms.get(False, (0, 0, 0.0, 0.0))
        n0, x0, _, _ = arms.get(True, (0, 0, 0.0, 0.0))
        lo, hi = wilson(x1, n1, confidence)
        lift, llo, lhi = katz_lift(x1, n1, x0, n0, confidence)
        rows.append(Row(
            action_id=aid, channel=ch, impressions=n1, responses=x1,
            rate=x1 / n1 if n1 else math.nan, rate_low=lo, rate_high=hi, value=v1,
            mean_reward=w1 / n1 if n1 else math.nan, control_impressions=n0,
            control_rate=x0 / n0 if n0 else math.nan, lift=lift, lift_low=llo, lift_high=lhi))
    return rows


def format_table(rows: list[Row], confidence: float = 0.95) -> str:
    c = f"{int(round(confidence * 100))}%"
    head = (f"{'action':<28} {'channel':<12} {'impr':>7} {'resp':>6} {'rate':>7} "
            f"{c + ' CI':>15} {'value':>10} {'ctrl n':>7} {'ctrl rate':>9} {'lift':>8} "
            f"{c + ' CI (lift)':>19}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = "n/a" if math.isnan(r.rate_low) else f"{_pct(r.rate_low)}-{_pct(r.rate_high)}"
        lci = ("n/a" if math.isnan(r.lift_low) else
               f"{_pct(r.lift_low)}..{_pct(r.lift_high)}")
        lines.append(
            f"{r.action_id:<28} {r.channel:<12} {r.impressions:>7} {r.responses:>6} "
            f"{_pct(r.rate):>7} {ci:>15} {r.value:>10.2f} {r.control_impressions:>7} "
            f"{_pct(r.control_rate):>9} {_pct(r.lift):>8} {lci:>19}")
    return "\n".join(lines)


def _plots(rows: list[Row], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    paths = []
    for ch in sorted({r.channel for r in rows}):
        sub = [r for r in rows if r.channel == ch and r.impressions]
        if not sub:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(sub) + 1.5))
        y = np.arange(len(sub))
        rate = np.array([r.rate for r in sub])
        err = np.array([[r.rate - r.rate_low for r in sub], [r.rate_high - r.rate for r in sub]])
        ax.barh(y, rate, xerr=err, color="#4c72b0", capsize=3, label="treated")
        ctrl = np.array([r.control_rate for r in sub])
        ax.scatter(ctrl, y, color="#dd8452", zorder=3, label="control")
        ax.set_yticks(y, [r.action_id for r in sub])
        ax.set_xlabel("response rate")
        ax.set_title(f"Response rate by action, {ch} (Wilson intervals)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = out / f"response_rate_{ch}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    lifted = [r for r in rows if not math.isnan(r.lift)]
    if lifted:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(lifted) + 1.5))
        y = np.arange(len(lifted))
        lift = np.array([r.lift for r in lifted])
        lo = np.array([r.lift_low for r in lifted])
        hi = np.array([r.lift_high for r in lifted])
        ok = ~np.isnan(lo)
        ax.errorbar(lift[ok], y[ok], xerr=[lift[ok] - lo[ok], hi[ok] - lift[ok]], fmt="o",
                    capsize=3)
        ax.plot(lift[~ok], y[~ok], "o", color="grey")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [f"{r.action_id} / {r.channel}" for r in lifted])
        ax.set_xlabel("lift over control")
        ax.set_title("Lift vs control (Katz log interval)")
        fig.tight_layout()
        path = out / "lift.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def build_report(data_dir: Path, out_dir: Path, confidence: float = 0.95) -> ReportResult:
    if not 0 < confidence < 1:
        raise ReportError(f"confidence must be between 0 and 1, got {confidence}")
    rows = summarise(data_dir, confidence)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = format_table(rows, confidence)
    plots = _plots(rows, out)
    total_n = sum(r.impressions for r in rows)
    total_x = sum(r.responses for r in rows)
    imgs = "\n".join(f'<p><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}"></p>'
                     for p in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nba report</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{font-size:12px}}</style></head>
<body><h1>Decision outcomes</h1>
<p>{total_n} treated impressions, {total_x} positive responses
({_pct(total_x / total_n if total_n else math.nan)}). Intervals: Wilson score for rates, Katz
log method for lift, at {confidence:.0%} confidence.</p>
{imgs}
<pre>{html.escape(text)}</pre>
</body></html>
"""
    page_path = out / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return ReportResult(rows=rows, text=text, html=page_path, plots=plots)
