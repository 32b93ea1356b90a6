"""Differential tests: the compiled backend against lightgbm.Booster.predict.

Models cover numerical splits with every missing type (None, NaN, Zero via zero_as_missing),
default_left both ways, categorical bitset splits over more than 32 categories, the
cross_entropy objective, random-forest averaging and single-leaf trees. Inputs include NaN,
+-inf, zeros of both signs, values next to LightGBM's zero threshold, huge values and
negative, fractional and unknown category codes.
"""

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
from nba_service.scoring.compiled import MODES, CompiledScorer
from nba_service.scoring.trees import UnsupportedModel, parse_model_text
from training.dataset import simulate_impressions
from training.simulate import Simulator
from training.train import train_propensity_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
F = 10
TOL = 1e-6
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1e-35, -1e-35, 1.0000001e-35,
           3.0e38, -3.0e38, -0.5, -1.0, 0.5, 31.0, 32.0, 33.0, 63.0, 64.0, 1e10]


def _synthetic_data(seed: int = 1, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    x[:, 0] = rng.integers(0, 70, n)  # categorical, > 64 codes: multi-word bitsets
    x[:, 1] = rng.integers(0, 5, n)  # categorical, few codes
    x[rng.random(n) < 0.2, 2] = np.nan  # NaN-missing numerical
    x[rng.random(n) < 0.3, 3] = 0.0
    logit = (np.sin(x[:, 0]) + (x[:, 1] == 2) + np.nan_to_num(x[:, 2]) + x[:, 4] * x[:, 5]
             - (x[:, 3] == 0))
    y = (logit + rng.normal(size=n) * 0.5 > 0.3).astype(np.float64)
    return x, y


def _train(**params: object) -> lgb.Booster:
    x, y = _synthetic_data()
    base = {"objective": "binary", "num_leaves": 31, "verbosity": -1, "max_cat_to_onehot": 4,
            "min_data_per_group": 5, "cat_smooth": 1.0, "num_threads": 1, "seed": 1}
    base.update(params)
    return lgb.train(base, lgb.Dataset(x, y, categorical_feature=[0, 1]), num_boost_round=40)


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    return {
        "binary": _train(),
        "zero_as_missing": _train(zero_as_missing=True),
        "cross_entropy": _train(objective="cross_entropy"),
        "sigmoid_2": _train(sigmoid=2.0),
        "random_forest": _train(boosting="rf", bagging_freq=1, bagging_fraction=0.7,
                                feature_fraction=0.8),
        "no_missing": _train(use_missing=False),
    }


@pytest.fixture(scope="module")
def demo_booster() -> lgb.Booster:
    schema = FeatureSchema.from_yaml(EXAMPLES / "features.yaml")
    catalog = load_catalog(EXAMPLES / "catalog.yaml", schema)
    data = simulate_impressions(Simulator(schema, catalog, 4), 300, 4,
                                ["WEB", "CALL_CENTRE", "CHAT"], seed=4)
    return train_propensity_model(data, schema, params={"num_leaves": 31}, seed=4,
                                  num_boost_round=30, early_stopping_rounds=0,
                                  log_every=0).booster


_SCORERS: dict[tuple[int, str], CompiledScorer] = {}


# Blocks vary in these columns only, so the customer x action path (masked.py) serves them.
ACTION_COLUMNS = (0, 4, 5)
VARIANTS = (*MODES, "masked")


def _compiled(booster: lgb.Booster, variant: str) -> CompiledScorer:
    key = (id(booster), variant)
    if key not in _SCORERS:
        text = booster.model_to_string()
        _SCORERS[key] = (
            CompiledScorer.from_model_text(text, "v", action_columns=ACTION_COLUMNS)
            if variant == "masked" else CompiledScorer.from_model_text(text, "v", mode=variant))
    return _SCORERS[key]


def _check(booster: lgb.Booster, x: np.ndarray) -> None:
    expected = booster.predict(x, num_threads=1)
    for mode in VARIANTS:
        got = _compiled(booster, mode).predict(x)
        assert got.dtype == np.float64 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=mode)


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-3, 75).map(float),  # category codes, known, unknown and negative
    st.sampled_from(SPECIAL),
)
matrices = hnp.arrays(np.float32, st.tuples(st.integers(1, 24), st.just(F)), elements=values)


@settings(max_examples=80, deadline=None)
@given(x=matrices, kind=st.sampled_from(["binary", "zero_as_missing", "cross_entropy",
                                         "sigmoid_2", "random_forest", "no_missing"]))
def test_matches_booster_on_arbitrary_rows(boosters: dict[str, lgb.Booster], x: np.ndarray,
                                           kind: str) -> None:
    _check(boosters[kind], x)


@st.composite
def customer_blocks(draw: st.DrawFn) -> np.ndarray:
    """One customer row repeated N times, a few columns varying per candidate (the serving
    shape the shared kernel is built for), NaN and edge values included."""
    n = draw(st.integers(1, 60))
    customer = draw(hnp.arrays(np.float32, F, elements=values))
    varying = draw(st.one_of(
        st.lists(st.sampled_from(ACTION_COLUMNS), min_size=0, max_size=3, unique=True),
        st.lists(st.integers(0, F - 1), min_size=0, max_size=3, unique=True)))
    x = np.repeat(customer[None, :], n, axis=0)
    for j in varying:
        x[:, j] = draw(hnp.arrays(np.float32, n, elements=values))
    return x


@settings(max_examples=120, deadline=None)
@given(x=customer_blocks(), kind=st.sampled_from(["binary", "zero_as_missing", "random_forest"]))
def test_matches_booster_on_customer_blocks(boosters: dict[str, lgb.Booster], x: np.ndarray,
                                            kind: str) -> None:
    _check(boosters[kind], x)


@settings(max_examples=30, deadline=None)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.just(38)), elements=values))
def test_matches_booster_on_the_demo_schema_model(demo_booster: lgb.Booster,
                                                  x: np.ndarray) -> None:
    _check(demo_booster, x)


def test_every_missing_type_and_categorical_split_is_exercised(
        boosters: dict[str, lgb.Booster]) -> None:
    """The fixtures really contain what the parity tests claim to cover."""
    seen_missing: set[int] = set()
    multiword = False
    for booster in boosters.values():
        e = parse_model_text(booster.model_to_string())
        seen_missing |= set(((e.node_flags >> 2) & 3).tolist())
        multiword = multiword or bool((e.node_cat_len > 1).any())
        assert (e.node_flags & 1).any(), "a categorical split"
        assert (e.node_flags & 2).any() and ((e.node_flags & 2) == 0).any(), "default_left"
    assert seen_missing == {0, 1, 2} and multiword


def test_single_leaf_trees_and_large_batches(boosters: dict[str, lgb.Booster]) -> None:
    text = boosters["binary"].model_to_string()
    # A constant tree in front: LightGBM writes one when no split gains anything.
    head, trees = text.split("\nTree=0\n", 1)
    # tree_sizes lets LightGBM parse trees in parallel; without it, it parses them in order.
    head = "\n".join(line for line in head.splitlines() if not line.startswith("tree_sizes="))
    constant = "Tree=0\nnum_leaves=1\nnum_cat=0\nleaf_value=0.25\nis_linear=0\nshrinkage=1\n\n"
    renumbered = "\n".join(
        f"Tree={int(line[5:]) + 1}" if line.startswith("Tree=") else line
        for line in ("Tree=0\n" + trees).splitlines())
    patched = head + "\n" + constant + "\n" + renumbered + "\n"
    booster = lgb.Booster(model_str=patched)
    x, _ = _synthetic_data(seed=9, n=700)
    x[::7, 2] = np.nan
    expected = booster.predict(x)
    got = CompiledScorer.from_model_text(patched, "v").predict(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert np.abs(expected - boosters["binary"].predict(x)).max() > 0.01  # the leaf counts


def test_unsupported_models_are_refused(boosters: dict[str, lgb.Booster]) -> None:
    x, y = _synthetic_data(n=600)
    multi = lgb.train({"objective": "multiclass", "num_class": 3, "verbosity": -1},
                      lgb.Dataset(x, (y + (x[:, 4] > 0)).astype(int)), num_boost_round=2)
    with pytest.raises(UnsupportedModel, match="multi-class"):
        parse_model_text(multi.model_to_string())
    linear = lgb.train({"objective": "binary", "linear_tree": True, "verbosity": -1},
                       lgb.Dataset(np.nan_to_num(x), y), num_boost_round=2)
    with pytest.raises(UnsupportedModel, match="linear"):
        parse_model_text(linear.model_to_string())
    regression = lgb.train({"objective": "regression", "verbosity": -1},
                           lgb.Dataset(x, y), num_boost_round=2)
    with pytest.raises(UnsupportedModel, match="objective 'regression'"):
        parse_model_text(regression.model_to_string())


def test_shape_is_checked_and_empty_input_is_fine(boosters: dict[str, lgb.Booster]) -> None:
    scorer = CompiledScorer.from_model_text(boosters["binary"].model_to_string(), "v")
    assert scorer.predict(np.empty((0, F), np.float32)).shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        scorer.predict(np.zeros((3, F + 1), np.float32))
    with pytest.raises(ValueError, match="mode"):
        CompiledScorer.from_model_text(boosters["binary"].model_to_string(), "v", mode="fast")
    # float64 and non-contiguous inputs are converted, not misread
    x, _ = _synthetic_data(seed=3, n=50)
    wide = np.asfortranarray(x.astype(np.float64))
    np.testing.assert_allclose(scorer.predict(wide), boosters["binary"].predict(x), atol=TOL)


def test_concurrent_calls_agree(boosters: dict[str, lgb.Booster]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    scorer = _compiled(boosters["binary"], "masked")
    x, _ = _synthetic_data(seed=5, n=300)
    blocks = [np.ascontiguousarray(x[i:i + 30]) for i in range(0, 300, 30)]
    for i in range(0, 300, 60):  # customer blocks too: the cached path under concurrency
        block = np.repeat(x[i:i + 1], 30, axis=0)
        block[:, list(ACTION_COLUMNS)] = x[i:i + 30][:, list(ACTION_COLUMNS)]
        blocks.append(block)
    expected = [boosters["binary"].predict(b) for b in blocks]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(scorer.predict, blocks))
            for a, b in zip(got, expected, strict=True):
                np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


def test_customer_x_action_path_is_taken_cached_and_falls_back(
        boosters: dict[str, lgb.Booster]) -> None:
    booster = boosters["binary"]
    text = booster.model_to_string()
    scorer = CompiledScorer.from_model_text(text, "v", action_columns=ACTION_COLUMNS)
    assert scorer._masked is not None
    x, _ = _synthetic_data(seed=11, n=400)
    block = np.repeat(x[:1], 80, axis=0)
    block[:, list(ACTION_COLUMNS)] = x[:80][:, list(ACTION_COLUMNS)]
    np.testing.assert_allclose(scorer.predict(block), booster.predict(block), rtol=0, atol=TOL)
    cached = int(scorer.action_cache.size[0])
    assert 0 < cached <= 80
    other = block.copy()
    other[:, 1:4] = x[200:201, 1:4]  # another customer, the same actions: nothing new cached
    np.testing.assert_allclose(scorer.predict(other), booster.predict(other), rtol=0, atol=TOL)
    assert int(scorer.action_cache.size[0]) == cached
    # a full cache is not an error: the tree walk scores what it cannot hold
    small = CompiledScorer(scorer.ensemble, "v", scorer.feature_names,
                           action_columns=ACTION_COLUMNS, action_cache=16)
    np.testing.assert_allclose(small.predict(block), booster.predict(block), rtol=0, atol=TOL)
    assert int(small.action_cache.size[0]) <= small.action_cache.limit
    # trees with more than 64 leaves cannot be decomposed: the walk serves alone
    xs, ys = _synthetic_data(seed=2, n=6000)
    big = lgb.train({"objective": "binary", "num_leaves": 100, "min_data_in_leaf": 5,
                     "verbosity": -1, "num_threads": 1}, lgb.Dataset(xs, ys), num_boost_round=3)
    wide = CompiledScorer.from_model_text(big.model_to_string(), "v", action_columns=(0,))
    assert wide._masked is None
    np.testing.assert_allclose(wide.predict(block), big.predict(block), rtol=0, atol=TOL)
