"""The evaluation report: `report.json` (every number), `report.html` and its PNG plots.

    report.json        model metrics, calibration / gain / lift points, OPE estimates with
                       intervals, weight diagnostics and warnings, the new policy's action mix
    report.html        the same, readable, with the plots below
    calibration.png    mean prediction vs observed rate per score bin
    gain.png           cumulative gain (share of positives in the top share of scores)
    lift.png           lift over the base rate per score decile
    ope.png            policy value estimates with confidence intervals vs the logging policy
    weights.png        distribution of the importance weights of matched rows
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import Evaluation, ModelMetrics
from training.ope import OPEResult

__all__ = ["write_report"]

FILES = ("report.json", "report.html", "calibration.png", "gain.png", "lift.png", "ope.png",
         "weights.png")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)


def _plot_metrics(m: ModelMetrics, out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    top = max([*m.calibration["mean_prediction"], *m.calibration["observed_rate"], 1e-3]) * 1.05
    ax.plot([0, top], [0, top], "--", color="grey", label="perfect")
    ax.plot(m.calibration["mean_prediction"], m.calibration["observed_rate"], "o-",
            label="model")
    ax.set(xlabel="mean predicted propensity", ylabel="observed rate",
           title="Calibration (score deciles)")
    ax.legend()
    _save(fig, out / "calibration.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.plot(m.gain["population"], m.gain["captured"], label=f"model (AUC {m.auc:.3f})")
    ax.set(xlabel="share of rows (highest scores first)", ylabel="share of positives",
           title="Cumulative gain")
    ax.legend()
    _save(fig, out / "gain.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(m.lift["decile"], m.lift["lift"])
    ax.axhline(1.0, color="grey", linestyle="--")
    ax.set(xlabel="score decile (1 = highest)", ylabel="lift over base rate", title="Lift")
    _save(fig, out / "lift.png")


def _plot_ope(ope: OPEResult | None, weights: np.ndarray, out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    if ope is not None:
        names = ["logged", *ope.estimates]
        ests = [ope.logged, *ope.estimates.values()]
        vals = np.array([e.value for e in ests])
        err = np.array([[e.value - e.lower for e in ests], [e.upper - e.value for e in ests]])
        colors = ["grey", *["C0"] * len(ope.estimates)]
        ax.bar(names, vals, yerr=np.maximum(err, 0), capsize=6, color=colors)
        ax.set(ylabel="value per decision",
               title=f"New policy vs logging policy ({ope.confidence:.0%} intervals)")
    else:
        ax.text(0.5, 0.5, "no rows with a logged propensity", ha="center")
    _save(fig, out / "ope.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    matched = weights[weights > 0] if len(weights) else weights
    if len(matched):
        ax.hist(np.log10(matched), bins=40)
        ax.set(xlabel="log10 importance weight (matched rows)", ylabel="rows",
               title=f"Importance weights: {len(matched)} of {len(weights)} rows matched")
    else:
        ax.text(0.5, 0.5, "the new policy never took the logged action", ha="center")
    _save(fig, out / "weights.png")


def _clean(obj: Any) -> Any:
    """JSON has no NaN / inf: write null instead."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return html.escape(str(v))


def _html(doc: dict[str, Any], title: str) -> str:
    m = doc["evaluation"]["metrics"]
    ope = doc["evaluation"]["ope"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             ".warn{background:#fff3cd;border:1px solid #e0b000;padding:8px}</style></head>"
             f"<body><h1>{html.escape(title)}</h1>"]
    info = doc.get("info") or {}
    if info:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}"
                                         "</td></tr>" for k, v in info.items()) + "</table>")
    parts.append("<h2>Model</h2><table><tr><th>rows</th><th>AUC</th><th>log loss</th>"
                 "<th>base rate</th><th>mean prediction</th></tr>"
                 f"<tr><td>{m['n']}</td><td>{_fmt(m['auc'])}</td><td>{_fmt(m['logloss'])}</td>"
                 f"<td>{_fmt(m['base_rate'])}</td><td>{_fmt(m['mean_prediction'])}</td></tr>"
                 "</table><p><img src='calibration.png'> <img src='gain.png'> "
                 "<img src='lift.png'></p>")
    parts.append(f"<h2>Off-policy evaluation (policy: {html.escape(doc['evaluation']['policy'])}"
                 ")</h2>")
    if ope is None:
        parts.append("<p>No rows carry a usable logged propensity: no OPE.</p>")
    else:
        d = ope["diagnostics"]
        for w in d["warnings"]:
            parts.append(f"<p class='warn'>Warning: {html.escape(w)}</p>")
        rows = [("logging policy (observed)", ope["logged"]), *ope["estimates"].items()]
        parts.append("<table><tr><th>estimator</th><th>value</th>"
                     f"<th>{ope['confidence']:.0%} interval</th><th>std error</th></tr>")
        for name, e in rows:
            parts.append(f"<tr><td>{html.escape(name.upper() if len(name) < 6 else name)}</td>"
                         f"<td>{_fmt(e['value'])}</td><td>[{_fmt(e['lower'])}, "
                         f"{_fmt(e['upper'])}]</td><td>{_fmt(e['std_error'])}</td></tr>")
        parts.append("</table>")
        parts.append(f"<p>Effective sample size {_fmt(d['ess'])} of {d['n']} rows "
                     f"({d['ess_fraction']:.1%}); smallest logged propensity "
                     f"{_fmt(d['min_propensity'])}; largest weight {_fmt(d['max_weight'])} "
                     f"({d['max_weight_share']:.2%} of the total); {d['matched']} rows where "
                     "the new policy took the logged action.</p>"
                     "<p><img src='ope.png'> <img src='weights.png'></p>")
        mix = doc["evaluation"].get("served_share") or {}
        if mix:
            logged = doc["evaluation"].get("logged_share") or {}
            parts.append("<h3>Action mix</h3><table><tr><th>action</th><th>new policy</th>"
                         "<th>logging policy</th></tr>" + "".join(
                             f"<tr><td>{html.escape(a)}</td><td>{s:.1%}</td>"
                             f"<td>{logged.get(a, 0.0):.1%}</td></tr>"
                             for a, s in list(mix.items())[:20]) + "</table>")
    parts.append("<p>All numbers: <a href='report.json'>report.json</a></p></body></html>")
    return "".join(parts)


def write_report(
    evaluation: Evaluation, out_dir: str | Path, *, title: str = "Model evaluation",
    info: Mapping[str, object] | None = None,
) -> Path:
    """Write the report files into `out_dir` (created) and return the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = _clean({"title": title, "info": dict(info or {}), "evaluation": evaluation.to_dict()})
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    _plot_metrics(evaluation.metrics, out)
    _plot_ope(evaluation.ope, evaluation.weights, out)
    page = out / "report.html"
    page.write_text(_html(doc, title), encoding="utf-8")
    return page
