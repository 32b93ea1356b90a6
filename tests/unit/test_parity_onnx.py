"""The float32 ONNX backend against lightgbm.Booster.predict: within ONNX_TOLERANCE on every
input the encoder can produce (NaN, +-inf, zeros, integer category codes known or not), and
the same top-10 actions for every customer of a fixed golden ranking set."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from features.encoding import RowEncoder
from features.schema import DType, FeatureSchema, Source
from nba_service.engine.catalog import Catalog, load_catalog
from nba_service.scoring.onnx_runtime import ONNX_TOLERANCE, OnnxScorer
from training.dataset import Dataset, simulate_impressions
from training.export import convert_to_onnx, verified_onnx
from training.simulate import Simulator
from training.train import train_propensity_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


@pytest.fixture(scope="module")
def catalog(schema: FeatureSchema) -> Catalog:
    return load_catalog(EXAMPLES / "catalog.yaml", schema)


@pytest.fixture(scope="module")
def data(schema: FeatureSchema, catalog: Catalog) -> Dataset:
    return simulate_impressions(Simulator(schema, catalog, 6), 400, 5,
                                ["WEB", "CALL_CENTRE", "MOBILE_APP"], seed=6)


@pytest.fixture(scope="module")
def booster(data: Dataset, schema: FeatureSchema) -> lgb.Booster:
    return train_propensity_model(data, schema, params={"num_leaves": 31}, seed=6,
                                  num_boost_round=60, early_stopping_rounds=0,
                                  log_every=0).booster


@pytest.fixture(scope="module")
def onnx_scorer(booster: lgb.Booster, schema: FeatureSchema) -> OnnxScorer:
    return OnnxScorer(convert_to_onnx(booster), "v", schema.column_names)


def _values_for(schema: FeatureSchema) -> list[st.SearchStrategy[float]]:
    numeric = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                        st.sampled_from([0.0, -0.0, 1e-40, 3.0e38, -3.0e38]))
    codes = st.one_of(st.integers(-3, 40).map(float), st.just(float("nan")))
    return [codes if s.dtype is DType.CATEGORICAL else numeric for s in schema.features]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_within_tolerance_on_encoder_inputs(schema: FeatureSchema, booster: lgb.Booster,
                                            onnx_scorer: OnnxScorer, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    cols = [data.draw(hnp.arrays(np.float32, n, elements=v)) for v in _values_for(schema)]
    x = np.ascontiguousarray(np.stack(cols, axis=1))
    got = onnx_scorer.predict(x)
    assert got.dtype == np.float64 and got.shape == (n,)
    np.testing.assert_allclose(got, booster.predict(x), rtol=0, atol=ONNX_TOLERANCE)


def _golden_ranking_set(schema: FeatureSchema, catalog: Catalog, data: Dataset
                        ) -> list[np.ndarray]:
    """40 customers x every catalog action, encoded the way the service encodes them."""
    encoder = RowEncoder(schema, [a.attributes() for a in catalog.actions])
    action_cols = [i for i, s in enumerate(schema.features) if s.source is Source.ACTION]
    customers = np.unique(data.customer_id.astype(str), return_index=True)[1][:40]
    blocks = []
    for row_index in customers:
        row = data.x[row_index].astype(np.float32).copy()
        row[action_cols] = np.nan
        blocks.append(encoder.encode(row, np.arange(len(catalog.actions))).copy())
    return blocks


def test_top10_is_identical_on_the_golden_ranking_set(
        schema: FeatureSchema, catalog: Catalog, data: Dataset, booster: lgb.Booster,
        onnx_scorer: OnnxScorer) -> None:
    blocks = _golden_ranking_set(schema, catalog, data)
    assert len(blocks) == 40 and blocks[0].shape[0] >= 30
    worst = 0.0
    for x in blocks:
        ref = booster.predict(x)
        got = onnx_scorer.predict(x)
        worst = max(worst, float(np.abs(ref - got).max()))
        np.testing.assert_array_equal(np.argsort(-ref, kind="stable")[:10],
                                      np.argsort(-got, kind="stable")[:10])
        assert len(np.unique(ref[np.argsort(-ref)[:10]])) > 1  # a real ranking, not all ties
    assert worst <= ONNX_TOLERANCE


def test_export_verification_refuses_zero_as_missing() -> None:
    """ONNX cannot express zero-as-missing splits: verification says so, no file is kept."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    x[rng.random(3000) < 0.3, 0] = 0.0
    y = ((x[:, 0] == 0) ^ (x[:, 1] > 0)).astype(np.float64)
    zam = lgb.train({"objective": "binary", "zero_as_missing": True, "verbosity": -1},
                    lgb.Dataset(x, y), num_boost_round=20)
    probe = x[:200].copy()
    probe[::2, 0] = 0.0
    data, why = verified_onnx(zam, probe, zam.predict(probe), [f"f{i}" for i in range(6)])
    assert data is None and "max abs diff" in why
    plain = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x, y),
                      num_boost_round=20)
    data, why = verified_onnx(plain, probe, plain.predict(probe), [f"f{i}" for i in range(6)])
    assert data is not None and why == ""


def test_bad_models_are_refused(schema: FeatureSchema, booster: lgb.Booster) -> None:
    with pytest.raises(ValueError, match=r"expected \[N, 5\]|takes shape"):
        OnnxScorer(convert_to_onnx(booster), "v", schema.column_names[:5])
    with pytest.raises(Exception, match="(?i)protobuf|parse|load"):
        OnnxScorer(b"not an onnx model", "v", schema.column_names)
