"""Datasets, deterministic training, the config file and the `python -m training` CLI."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from features.encoding import RowEncoder, encode_rows
from features.schema import FeatureSchema
from nba_service.engine.catalog import Catalog, load_catalog
from nba_service.scoring.artifact import load_artifact
from training.__main__ import main
from training.config import ConfigError, load_config
from training.dataset import Dataset, DatasetError, simulate_impressions
from training.simulate import Simulator
from training.train import auc, log_loss, train_demo_model, train_propensity_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMALL = {"learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 20}


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


@pytest.fixture(scope="module")
def catalog(schema: FeatureSchema) -> Catalog:
    return load_catalog(EXAMPLES / "catalog.yaml", schema)


@pytest.fixture(scope="module")
def sim(schema: FeatureSchema, catalog: Catalog) -> Simulator:
    return Simulator(schema, catalog, seed=3)


@pytest.fixture(scope="module")
def data(sim: Simulator) -> Dataset:
    return simulate_impressions(sim, 500, 4, ["WEB", "CALL_CENTRE", "EMAIL"], seed=1)


def test_impressions_are_served_on_their_channel_with_logged_propensity(
    data: Dataset, sim: Simulator, schema: FeatureSchema
) -> None:
    assert data.x.shape == (2000, len(schema.column_names)) and data.x.dtype == np.float32
    assert data.y.dtype == np.int8 and set(np.unique(data.y)) == {0, 1}
    for channel in ("WEB", "CALL_CENTRE", "EMAIL"):
        rows = data.channel == channel
        avail = sim.available(channel)
        assert rows.any() and np.all(avail[data.action_idx[rows]])
        np.testing.assert_allclose(data.propensity_logged[rows], 1.0 / avail.sum())
    # The encoded channel and action columns are the served ones.
    chan_spec = schema.get("channel")
    assert chan_spec is not None
    np.testing.assert_array_equal(
        data.x[:, schema.index("channel")], [chan_spec.code(c) for c in data.channel]
    )


def test_rows_are_what_the_serving_encoder_builds(
    data: Dataset, sim: Simulator, schema: FeatureSchema, catalog: Catalog
) -> None:
    # Rebuild the first round's rows through `encode_rows` from raw records: byte-identical.
    visits = sim.visits(sim.population(500), data.channel[:500], seed=1 * 1_000_003 + 0)
    records = [
        {**rec, "action_id": catalog.actions[int(a)].id}
        for rec, a in zip(visits.to_dicts(schema), data.action_idx[:500], strict=True)
    ]
    encoder = RowEncoder(schema, [a.attributes() for a in catalog.actions])
    expected = encode_rows(schema, encoder, records)
    np.testing.assert_array_equal(data.x[:500], expected)


def test_epsilon_greedy_logs_exact_selection_probabilities(sim: Simulator) -> None:
    d = simulate_impressions(sim, 200, 2, ["WEB"], logging_policy="epsilon_greedy", seed=2,
                             epsilon=0.2)
    n_avail = sim.available("WEB").sum()
    explore = 0.2 / n_avail
    assert set(np.round(np.unique(d.propensity_logged), 12)) <= {
        round(explore, 12), round(0.8 + explore, 12)}
    assert np.mean(d.propensity_logged > 0.5) > 0.7
    with pytest.raises(ValueError, match="logging_policy"):
        simulate_impressions(sim, 10, 1, ["WEB"], logging_policy="greedy")
    with pytest.raises(ValueError, match="FAX"):
        simulate_impressions(sim, 10, 1, ["FAX"])


def test_dataset_parquet_round_trip(data: Dataset, schema: FeatureSchema, tmp_path: Path) -> None:
    path = data.save(tmp_path / "d.parquet")
    back = Dataset.load(path, schema)
    np.testing.assert_array_equal(back.x, data.x)
    np.testing.assert_array_equal(back.y, data.y)
    np.testing.assert_array_equal(back.action_idx, data.action_idx)
    np.testing.assert_array_equal(back.channel, data.channel)
    np.testing.assert_array_equal(back.propensity_logged, data.propensity_logged)
    assert back.window == data.window and back.action_ids == data.action_ids
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    assert names[: len(schema.column_names)] == schema.column_names
    assert names[len(schema.column_names):] == [
        "label", "logged_action_id", "logged_channel", "logged_propensity", "customer_id"]


def test_dataset_refuses_another_schema(data: Dataset, tmp_path: Path) -> None:
    path = data.save(tmp_path / "d.parquet")
    other = FeatureSchema.from_dict({"features": [{"name": "age", "dtype": "int"}]})
    with pytest.raises(DatasetError, match="schema hash"):
        Dataset.load(path, other)


def test_auc_and_logloss_match_definitions() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60), 1)  # many ties
    pairs = [(i, j) for i, j in itertools.product(range(60), range(60)) if y[i] and not y[j]]
    brute = np.mean([1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0 for i, j in pairs])
    assert auc(y, p) == pytest.approx(brute)
    assert log_loss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))
    assert np.isnan(auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_training_is_reproducible_and_learns(data: Dataset, schema: FeatureSchema) -> None:
    kw = {"params": SMALL, "seed": 5, "num_boost_round": 20, "early_stopping_rounds": 0,
          "log_every": 0}
    a = train_propensity_model(data, schema, **kw)  # type: ignore[arg-type]
    b = train_propensity_model(data, schema, **kw)  # type: ignore[arg-type]
    assert a.booster.model_to_string() == b.booster.model_to_string()
    assert a.metrics == b.metrics
    c = train_propensity_model(data, schema, **{**kw, "seed": 6})  # type: ignore[arg-type]
    assert c.booster.model_to_string() != a.booster.model_to_string()
    assert a.metrics["auc"] > 0.6
    assert a.metrics["n_train"] + a.metrics["n_valid"] == len(data)
    assert a.booster.num_trees() == 20
    # Categorical columns are declared as such: the model lists their categories instead of
    # a [min:max] range.
    text = a.booster.model_to_string()
    infos = next(ln for ln in text.splitlines() if ln.startswith("feature_infos=")).split("=")[1]
    kinds = infos.split(" ")
    for i, spec in enumerate(schema.features):
        is_range = kinds[i].startswith("[") or kinds[i] == "none"
        assert is_range == (spec.dtype.value != "categorical") or kinds[i] == "none", spec.name
    assert not kinds[schema.index("action_id")].startswith("[")
    assert a.params["deterministic"] is True and a.params["force_row_wise"] is True


def test_validation_holds_out_whole_customers(data: Dataset, schema: FeatureSchema) -> None:
    r = train_propensity_model(data, schema, params=SMALL, num_boost_round=5, log_every=0)
    valid_customers = set(data.customer_id[r.valid_rows])
    train_mask = np.ones(len(data), bool)
    train_mask[r.valid_rows] = False
    assert valid_customers.isdisjoint(set(data.customer_id[train_mask]))


def test_class_imbalance_options(data: Dataset, schema: FeatureSchema) -> None:
    r = train_propensity_model(data, schema, params=SMALL, num_boost_round=3, log_every=0,
                               class_imbalance="scale_pos_weight")
    n_pos = data.y[np.setdiff1d(np.arange(len(data)), r.valid_rows)].sum()
    n_train = r.metrics["n_train"]
    assert r.params["scale_pos_weight"] == pytest.approx((n_train - n_pos) / n_pos)
    r = train_propensity_model(data, schema, params=SMALL, num_boost_round=3, log_every=0,
                               class_imbalance="is_unbalance")
    assert r.params["is_unbalance"] is True
    with pytest.raises(ValueError, match="set by train_propensity_model"):
        train_propensity_model(data, schema, params={"seed": 1})


def test_example_config_loads_and_bad_fields_are_named(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLES / "train.yaml")
    assert cfg.schema_path == EXAMPLES / "features.yaml"
    assert cfg.training.class_imbalance == "none"
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: f.yaml\ncatalog: c.yaml\ntraining: {num_boost_rounds: 3}\n")
    with pytest.raises(ConfigError, match="training.num_boost_rounds"):
        load_config(bad)
    bad.write_text("schema: f.yaml\ncatalog: c.yaml\ntraining: {params: {seed: 3}}\n")
    with pytest.raises(ConfigError, match="seed"):
        load_config(bad)


def _tiny_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"name: tiny\nschema: {EXAMPLES / 'features.yaml'}\ncatalog: {EXAMPLES / 'catalog.yaml'}\n"
        "seed: 3\nsimulation: {customers: 400, impressions_per_customer: 5}\n"
        "training: {num_boost_round: 20, early_stopping_rounds: 5, log_every: 5}\n"
        "golden_rows: 16\n"
    )
    return cfg


def test_cli_simulate_train_verify_publish(
    tmp_path: Path, schema: FeatureSchema, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _tiny_config(tmp_path)
    data = tmp_path / "imp.parquet"
    assert main(["-q", "simulate", "--config", str(cfg), "--out", str(data),
                 "--profiles", str(tmp_path / "people.jsonl")]) == 0
    assert len(Dataset.load(data, schema)) == 2000
    assert len((tmp_path / "people.jsonl").read_text().splitlines()) == 400
    out = tmp_path / "model"
    assert main(["-q", "train", "--config", str(cfg), "--dataset", str(data),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "auc=" in printed and "logloss=" in printed
    loaded = load_artifact(out, schema)
    assert loaded.version.startswith("tiny-")
    assert main(["-q", "train", "--config", str(cfg), "--out", str(out)]) == 2  # exists
    assert "not empty" in capsys.readouterr().err
    assert main(["verify", "--artifact", str(out), "--schema",
                 str(EXAMPLES / "features.yaml")]) == 0
    assert main(["publish", "--artifact", str(out), "--registry", str(tmp_path / "reg"),
                 "--schema", str(EXAMPLES / "features.yaml")]) == 0
    assert (tmp_path / "reg" / "propensity" / "current").read_text().strip() == loaded.version
    exported = tmp_path / "exported"
    assert main(["-q", "export", "--model", str(out / "model.txt"), "--dataset", str(data),
                 "--schema", str(EXAMPLES / "features.yaml"), "--out", str(exported)]) == 0
    assert load_artifact(exported, schema).scorer.model_text() == loaded.scorer.model_text()


def test_cli_help_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for cmd in ("simulate", "train", "export", "verify", "publish"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: python -m training " + cmd in capsys.readouterr().out
    assert main(["verify", "--artifact", str(tmp_path), "--schema",
                 str(EXAMPLES / "features.yaml")]) == 2
    assert "manifest.json: missing" in capsys.readouterr().err


def test_train_demo_model_is_fast_and_loadable(
    schema: FeatureSchema, catalog: Catalog, tmp_path: Path
) -> None:
    started = time.monotonic()
    path = train_demo_model(schema, catalog, tmp_path / "demo", n_customers=2000, seed=7)
    elapsed = time.monotonic() - started
    loaded = load_artifact(path, schema)
    assert loaded.manifest.metrics["auc"] > 0.65
    assert elapsed < 15, f"demo model took {elapsed:.1f}s"
