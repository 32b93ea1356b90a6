"""LightGBMScorer against lightgbm.Booster.predict, including NaN and +-inf inputs."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from features.schema import FeatureSchema
from nba_service.engine.catalog import load_catalog
from nba_service.scoring.base import Explainer, Scorer
from nba_service.scoring.lightgbm_native import LightGBMScorer
from training.dataset import simulate_impressions
from training.simulate import Simulator
from training.train import train_propensity_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
N_FEATURES = 38


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    schema = FeatureSchema.from_yaml(EXAMPLES / "features.yaml")
    catalog = load_catalog(EXAMPLES / "catalog.yaml", schema)
    data = simulate_impressions(Simulator(schema, catalog, 2), 500, 4,
                                ["WEB", "CALL_CENTRE"], seed=2)
    return train_propensity_model(data, schema, params={"num_leaves": 15}, seed=2,
                                  num_boost_round=20, early_stopping_rounds=0,
                                  log_every=0).booster


@pytest.fixture(scope="module")
def scorer(booster: lgb.Booster) -> LightGBMScorer:
    return LightGBMScorer(booster, version="v-test")


def test_implements_the_scorer_protocol(scorer: LightGBMScorer) -> None:
    assert isinstance(scorer, Scorer) and isinstance(scorer, Explainer)
    assert scorer.backend == "lightgbm" and scorer.version == "v-test"
    assert len(scorer.feature_names) == N_FEATURES and scorer.feature_names[0] == "age"


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-2, 40).map(float),  # categorical codes, known and unknown
)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.just(N_FEATURES)),
                  elements=values))
def test_predict_equals_booster_predict(scorer: LightGBMScorer, booster: lgb.Booster,
                                        x: np.ndarray) -> None:
    got = scorer.predict(x)
    assert got.dtype == np.float64 and got.shape == (x.shape[0],)
    np.testing.assert_array_equal(got, booster.predict(x))
    assert np.all((got >= 0) & (got <= 1))


def test_from_file_and_string_agree(booster: lgb.Booster, tmp_path: Path) -> None:
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    x = np.random.default_rng(0).normal(size=(20, N_FEATURES)).astype(np.float32)
    x[::3, ::2] = np.nan
    a = LightGBMScorer(path, "f").predict(x)
    b = LightGBMScorer.from_string(path.read_text(), "s").predict(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, booster.predict(x))


def test_contributions_sum_to_the_raw_score(scorer: LightGBMScorer) -> None:
    x = np.random.default_rng(1).normal(size=(10, N_FEATURES)).astype(np.float32)
    x[:, 31] = 0  # channel WEB
    contrib = scorer.contributions(x)
    assert contrib.shape == (10, N_FEATURES + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), scorer.raw_score(x), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(1 / (1 + np.exp(-scorer.raw_score(x))), scorer.predict(x),
                               rtol=1e-12)


def test_shapes_are_checked(scorer: LightGBMScorer) -> None:
    with pytest.raises(ValueError, match=r"expected an \(N, 38\) matrix, got shape \(4, 37\)"):
        scorer.predict(np.zeros((4, 37), np.float32))
    with pytest.raises(ValueError, match="got shape"):
        scorer.predict(np.zeros(38, np.float32))
    assert scorer.predict(np.zeros((0, 38), np.float32)).shape == (0,)
    assert scorer.contributions(np.zeros((0, 38), np.float32)).shape == (0, 39)
    x64 = np.random.default_rng(2).normal(size=(3, 38))
    np.testing.assert_array_equal(scorer.predict(x64), scorer.predict(x64.astype(np.float32)))
    with pytest.raises(ValueError, match="38 features, 2 names"):
        LightGBMScorer(scorer.booster, "v", feature_names=["a", "b"])


def test_concurrent_predictions_match_serial(scorer: LightGBMScorer) -> None:
    # The service scores from several worker threads at once on one shared scorer.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(25, N_FEATURES)).astype(np.float32) for _ in range(40)]
    serial = [scorer.predict(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(scorer.predict, batches))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
