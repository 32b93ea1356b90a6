"""The benchmark's arithmetic: percentiles, the composite floor, fits, targets, profile buckets,
and the N-candidate catalogs it serves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.schema import FeatureSchema
from loadtests import stats
from loadtests.fixture import BENCH_CHANNEL, catalog_doc
from loadtests.profile import parse_folded, stage_of, summarize
from loadtests.sysinfo import cpu_between
from loadtests.targets import targets
from nba_service.engine.catalog import parse_catalog


def test_percentile_is_nearest_rank_and_never_interpolates() -> None:
    a = np.arange(1, 101)  # 1..100
    assert stats.percentile(a, 50) == 50
    assert stats.percentile(a, 99) == 99
    assert stats.percentile(a, 100) == 100
    assert stats.percentile(a, 0) == 1
    # 1,000 samples: p99.9 is the 999th smallest, an observed value.
    b = np.arange(1000)[::-1]
    assert stats.percentile(b, 99.9) == 998
    assert stats.percentile([10, 20], 50) == 10  # not 15
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile(a, 101)


def test_summarize_reports_microseconds_and_count() -> None:
    ns = np.array([1000, 2000, 3000, 4000, 100_000], dtype=np.int64)
    s = stats.summarize(ns)
    assert s["p50"] == 3.0
    assert s["p99"] == 100.0 and s["p999"] == 100.0 and s["max"] == 100.0
    assert s["n"] == 5
    assert "mean" not in s and "avg" not in s


def test_composite_is_the_convolution_not_the_sum_of_percentiles() -> None:
    rng = np.random.default_rng(3)
    a = rng.exponential(100.0, 50_000)
    b = rng.exponential(100.0, 50_000)
    comp = stats.composite([a, b], n=200_000, seed=1)
    # The sum of two exponentials is Gamma(2): its p99 is 6.64 x scale, less than 2 x 4.61.
    assert stats.percentile(comp, 99) == pytest.approx(663.8, rel=0.05)
    assert stats.percentile(comp, 99) < stats.percentile(a, 99) + stats.percentile(b, 99)
    assert stats.percentile(comp, 50) == pytest.approx(167.8, rel=0.05)
    const = stats.composite([np.full(10, 5.0), np.full(3, 7.0)], n=100)
    assert np.all(const == 12.0)
    with pytest.raises(ValueError):
        stats.composite([a, np.empty(0)])


def test_linear_fit_recovers_slope_and_r2() -> None:
    fit = stats.linear_fit([20, 100, 500], [140.0, 300.0, 1100.0])
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(100.0)
    assert fit.r2 == pytest.approx(1.0)
    noisy = stats.linear_fit([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])
    assert 0 < noisy.r2 < 1
    with pytest.raises(ValueError):
        stats.linear_fit([5, 5], [1.0, 2.0])


def test_target_margins_say_by_how_much() -> None:
    met = stats.Target("p50 vs floor", 1.2, 1.5, "<=", "x")
    assert met.met and met.margin == pytest.approx(0.2)
    missed = stats.Target("p50 vs floor", 3.0, 1.5, "<=", "x")
    assert not missed.met and missed.margin == pytest.approx(-1.0)
    assert "MISSED (100% over the limit)" in missed.describe()
    short = stats.Target("throughput", 1200.0, 1500.0, ">=", "/s")
    assert not short.met and "20% under the limit" in short.describe()
    assert not stats.Target("x", float("nan"), 1.0, "<=").met


def test_cpu_between_attributes_other_tenants() -> None:
    class S:
        def __init__(self, groups: dict[str, int], busy: int) -> None:
            self.groups, self.busy, self.total = groups, busy, 0

    a = S({"server": 0, "clients": 0}, 0)
    b = S({"server": 100, "clients": 50}, 400)  # ticks at 100 Hz over 2 s
    out = cpu_between(a, b, 2.0)  # type: ignore[arg-type]
    assert out["server"] == pytest.approx(0.5)
    assert out["clients"] == pytest.approx(0.25)
    assert out["machine_busy"] == pytest.approx(2.0)
    assert out["other"] == pytest.approx(1.25)


def _config(n: int, w: int, c1_p50: float, c1_p99: float, floor_p50: float, floor_p99: float,
            server_p50: float, score_p50: float, sat: float) -> dict[str, object]:
    lat = {"p50": c1_p50, "p95": c1_p99, "p99": c1_p99, "p999": c1_p99}
    return {
        "candidates": n, "workers": w,
        "floor": {"latency_us": {"p50": floor_p50, "p99": floor_p99}},
        "phases": {
            "decide_c1": {"latency_us": lat, "throughput": sat / 4, "concurrency": 1,
                          "error_count": 0, "errors": {},
                          "server_stages_us": {"total": {"p50": server_p50, "p99": 0}}},
            "decide_c16": {"latency_us": lat, "throughput": sat, "concurrency": 16,
                           "error_count": 0, "errors": {}},
            "floor_score": {"latency_us": {"p50": score_p50}},
        },
    }


def test_targets_from_a_sweep() -> None:
    configs = [
        _config(20, 1, 500, 900, 400, 800, 300, 60, 1000),
        _config(100, 1, 700, 1300, 500, 1000, 500, 260, 900),
        _config(500, 1, 1700, 3000, 1500, 2500, 1500, 1260, 400),
        _config(100, 2, 700, 1300, 500, 1000, 500, 260, 1600),
    ]
    got = {t.name: t for t in targets(configs, 100)}
    assert got["p50 vs floor, one in flight, N=100"].measured == pytest.approx(1.4)
    assert got["p50 vs floor, one in flight, N=100"].met
    assert got["p99 vs floor, one in flight, N=100"].measured == pytest.approx(1.3)
    sat = got["decisions/s at saturation, N=100"]
    assert sat.measured == 1600 and sat.met
    # Decide grows 2.5 us per candidate, the scorer 2.5: slope ratio 1.
    assert got["server cost slope per candidate vs scorer alone"].measured == pytest.approx(1.0)
    scaling = got["2 workers vs 1, throughput, N=100"]
    assert scaling.measured == pytest.approx(1600 / 900) and scaling.met


@pytest.mark.parametrize("n", [20, 100, 500])
def test_bench_catalog_has_exactly_n_candidates_on_the_channel(
    n: int, demo_schema: FeatureSchema
) -> None:
    doc = catalog_doc(n)
    catalog = parse_catalog(doc, demo_schema)
    on_channel = [a for a in catalog.actions if BENCH_CHANNEL in a.channels]
    assert len(on_channel) == n
    assert len({a.id for a in catalog.actions}) == len(catalog.actions)
    with pytest.raises(ValueError):
        catalog_doc(1)  # fewer than the channel's fallback actions


def test_profile_buckets_by_innermost_known_stage() -> None:
    folded = "\n".join([
        "run (asyncio/events.py:80);decide (nba_service/decide.py:120);"
        "predict (nba_service/scoring/lightgbm_native.py:60);"
        "__inner_predict_np2d (lightgbm/basic.py:1000) 6",
        "run (asyncio/events.py:80);decide (nba_service/decide.py:120);"
        "fetch (nba_service/store/online.py:150);pack_command (redis/asyncio/connection.py:9) 3",
        "run (asyncio/events.py:80);_run_once (asyncio/base_events.py:1900) 1",
        "garbage line without count",
    ])
    stacks = parse_folded(folded)
    assert sum(c for _, c in stacks) == 10
    assert stage_of(stacks[0][0]).startswith("score")
    assert stage_of(stacks[1][0]).startswith("store")
    assert stage_of(stacks[2][0]) == "event loop + gRPC aio core"
    text = summarize(stacks)
    assert "60.0%  score" in text and "30.0%  store" in text and "10.0%  event loop" in text
