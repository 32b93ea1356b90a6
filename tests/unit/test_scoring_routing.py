"""Champion/challenger routing and the inline-or-thread scoring runner (pure logic)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from features.schema import FeatureSchema
from nba_service.scoring.registry import ModelHolder
from nba_service.scoring.router import CHALLENGER, CHAMPION, ModelRouter, challenger_bucket
from nba_service.scoring.runner import ScoringRunner
from nba_service.scoring.selection import CostModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class FakeScorer:
    backend = "fake"

    def __init__(self, offset: float = 0.0, fail: bool = False) -> None:
        self.offset = offset
        self.fail = fail
        self.threads: list[str] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("boom")
        return x[:, 0].astype(np.float64) + self.offset


def _model(version: str, cost_us: float = 1.0, **kw: Any) -> Any:
    return SimpleNamespace(version=version, scorer=FakeScorer(**kw),
                           cost=CostModel(cost_us, 0.0))


def _holder(slot: str, model: Any) -> ModelHolder:
    holder = ModelHolder(FeatureSchema.from_yaml(EXAMPLES / "features.yaml"), slot)
    holder._model = model
    return holder


def test_bucket_is_stable_uniform_and_slot_specific() -> None:
    ids = [f"cust-{i}" for i in range(20000)]
    buckets = np.array([challenger_bucket("challenger", c) for c in ids])
    assert ((buckets >= 0) & (buckets < 1)).all()
    assert abs((buckets < 0.2).mean() - 0.2) < 0.015
    assert challenger_bucket("challenger", "cust-7") == challenger_bucket("challenger", "cust-7")
    other = np.array([challenger_bucket("challenger-2", c) for c in ids])
    assert abs(np.corrcoef(buckets, other)[0, 1]) < 0.05


def test_split_mode_routes_the_share_to_the_challenger() -> None:
    champ, chall = _model("champ"), _model("chall")
    router = ModelRouter(_holder("p", champ), _holder("c", chall), share=0.3)
    routes = {c: router.route(c) for c in (f"id{i}" for i in range(3000))}
    in_arm = [c for c, r in routes.items() if r.arm == CHALLENGER]
    assert abs(len(in_arm) / 3000 - 0.3) < 0.04
    for c, r in routes.items():
        expected = challenger_bucket("c", c) < 0.3
        assert (r.arm == CHALLENGER) == expected
        assert r.model is (chall if expected else champ) and r.shadow is None


def test_shadow_mode_serves_the_champion_and_shadows_the_share() -> None:
    champ, chall = _model("champ"), _model("chall")
    router = ModelRouter(_holder("p", champ), _holder("c", chall), share=1.0, shadow=True)
    r = router.route("anyone")
    assert r.model is champ and r.shadow is chall and r.arm == CHAMPION


def test_missing_models_fall_back_to_the_other_arm() -> None:
    champ = _model("champ")
    assert ModelRouter(_holder("p", champ), _holder("c", None), 1.0).route("x").model is champ
    chall = _model("chall")
    r = ModelRouter(_holder("p", None), _holder("c", chall), 1.0, shadow=True).route("x")
    assert r.model is chall and r.shadow is None
    assert ModelRouter(_holder("p", champ)).route("x").model is champ
    with pytest.raises(ValueError, match="share"):
        ModelRouter(_holder("p", champ), share=1.5)


def test_runner_scores_cheap_calls_inline_and_expensive_ones_on_a_thread() -> None:
    runner = ScoringRunner(inline_max_us=100.0, threads=1)
    cheap, costly = _model("cheap", cost_us=10.0), _model("costly", cost_us=5000.0)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)

    async def scenario() -> None:
        runner.start()
        try:
            s1, x1 = await runner.score(cheap, x)
            assert x1 is x and cheap.scorer.threads == [threading.current_thread().name]
            s2, x2 = await runner.score(costly, x)
            # the thread scored a private copy: the shared buffer may change meanwhile
            assert x2 is not x and np.array_equal(x2, x)
            assert costly.scorer.threads[0].startswith("nba-score")
            np.testing.assert_array_equal(s1, s2)
        finally:
            runner.stop()
        assert runner.details()["scoring_offloaded_calls"] == 1
        assert runner.details()["scoring_inline_calls"] == 1
        # stopped: everything runs inline
        await runner.score(costly, x)
        assert costly.scorer.threads[-1] == threading.current_thread().name

    asyncio.run(scenario())


def test_shadow_scores_carry_ids_and_version_and_failures_are_contained() -> None:
    runner = ScoringRunner(inline_max_us=100.0, threads=0)
    catalog = SimpleNamespace(actions=[SimpleNamespace(id=f"a{i}") for i in range(5)])
    x = np.array([[0.5, 0], [0.25, 0]], dtype=np.float32)
    candidates = np.array([3, 1])

    async def scenario() -> None:
        shadow, _ = await runner.shadow(_model("chall-1", offset=0.1), x, catalog, candidates)
        assert shadow is not None and shadow.model_version == "chall-1"
        assert shadow.action_ids == ("a3", "a1")
        np.testing.assert_allclose(shadow.scores, (0.6, 0.35))
        failed, x_back = await runner.shadow(_model("bad", fail=True), x, catalog, candidates)
        assert failed is None and x_back is x and runner.shadow_failures == 1

    asyncio.run(scenario())
