"""The published targets (N = 100 candidates, 200-tree model, load generator on the same box),
computed from a bench run's configurations."""

from __future__ import annotations

from typing import Any

from loadtests.stats import Target, linear_fit, ratio

P50_VS_FLOOR = 1.5
P99_VS_FLOOR = 2.0
MIN_THROUGHPUT = 1500.0
SLOPE_VS_SCORER = 1.25  # "the slope of the scorer alone", with room for measurement noise
SCALING_2_WORKERS = 1.6


def _find(configs: list[dict[str, Any]], n: int, w: int) -> dict[str, Any] | None:
    return next((c for c in configs if c["candidates"] == n and c["workers"] == w), None)


def _best_closed(cfg: dict[str, Any]) -> dict[str, Any]:
    closed = [p for name, p in cfg["phases"].items() if name.startswith("decide_c")]
    return max(closed, key=lambda p: p["throughput"])


def _generator_note(cfg: dict[str, Any], best: dict[str, Any]) -> str:
    echo = [p for name, p in cfg["phases"].items() if name.startswith("echo_c")]
    cpu = best.get("cpu_cores", {})
    parts = [f"W={cfg['workers']}: {best['throughput']:.0f}/s at c={best.get('concurrency')}"]
    if echo:
        parts.append(f"generator+server echo {echo[0]['throughput']:.0f}/s")
    if cpu:
        parts.append(
            f"cores: clients {cpu.get('clients', 0):.2f}, server {cpu.get('server', 0):.2f}, "
            f"store {cpu.get('store', 0):.2f}, other tenants {cpu.get('other', 0):.2f}"
        )
    return "; ".join(parts)


def targets(configs: list[dict[str, Any]], n_ref: int = 100) -> list[Target]:
    out: list[Target] = []
    one = _find(configs, n_ref, 1)
    if one is not None and "decide_c1" in one["phases"]:
        c1 = one["phases"]["decide_c1"]["latency_us"]
        fl = one["floor"]["latency_us"]
        note = f"Decide p50 {c1['p50']:.0f} us / p99 {c1['p99']:.0f} us; floor p50 " \
               f"{fl['p50']:.0f} us / p99 {fl['p99']:.0f} us"
        out.append(Target(f"p50 vs floor, one in flight, N={n_ref}", ratio(c1["p50"], fl["p50"]),
                          P50_VS_FLOOR, "<=", "x", note))
        out.append(Target(f"p99 vs floor, one in flight, N={n_ref}", ratio(c1["p99"], fl["p99"]),
                          P99_VS_FLOOR, "<=", "x", note))
    at_ref = [c for c in configs if c["candidates"] == n_ref]
    if at_ref:
        best_cfg = max(at_ref, key=lambda c: _best_closed(c)["throughput"])
        best = _best_closed(best_cfg)
        out.append(Target(f"decisions/s at saturation, N={n_ref}", best["throughput"],
                          MIN_THROUGHPUT, ">=", "/s", _generator_note(best_cfg, best)))
        out.append(Target(f"errors at saturation, N={n_ref}", float(best["error_count"]), 0.0,
                          "<=", "", str(best["errors"])))
    singles = sorted((c for c in configs if c["workers"] == 1 and "decide_c1" in c["phases"]),
                     key=lambda c: c["candidates"])
    if len(singles) >= 2:
        ns = [c["candidates"] for c in singles]
        decide = linear_fit(ns, [c["phases"]["decide_c1"]["server_stages_us"]["total"]["p50"]
                                 for c in singles])
        score = linear_fit(ns, [c["phases"]["floor_score"]["latency_us"]["p50"] for c in singles])
        out.append(Target(
            "server cost slope per candidate vs scorer alone", ratio(decide.slope, score.slope),
            SLOPE_VS_SCORER, "<=", "x",
            f"Decide {decide.slope:.2f} us/candidate (R2 {decide.r2:.3f}), scorer "
            f"{score.slope:.2f} us/candidate (R2 {score.r2:.3f}), N={ns}"))
    two = _find(configs, n_ref, 2)
    if one is not None and two is not None:
        b1, b2 = _best_closed(one), _best_closed(two)
        out.append(Target(f"2 workers vs 1, throughput, N={n_ref}",
                          ratio(b2["throughput"], b1["throughput"]), SCALING_2_WORKERS, ">=", "x",
                          _generator_note(one, b1) + " | " + _generator_note(two, b2)))
    return out
