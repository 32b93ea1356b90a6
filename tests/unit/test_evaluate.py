"""Model metrics, candidate scoring through the engine, the report files, and datasets built
from `nba logs export` impressions files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.schema import FeatureSchema
from nba_service.engine.catalog import Catalog, load_catalog
from tests.conftest import EXAMPLES
from training.bandit_dataset import simulate_logged
from training.dataset import Dataset, DatasetError, simulate_impressions
from training.evaluate import (
    booster_predict,
    calibration_curve,
    evaluate_model,
    gain_curve,
    score_candidates,
)
from training.logs_dataset import concat_datasets, load_logs
from training.report import FILES, write_report
from training.simulate import Simulator
from training.train import train_propensity_model

CHANNELS = ["WEB", "CALL_CENTRE", "BRANCH"]


@pytest.fixture(scope="module")
def demo_catalog(demo_schema: FeatureSchema) -> Catalog:
    return load_catalog(EXAMPLES / "catalog.yaml", demo_schema)


@pytest.fixture(scope="module")
def sim(demo_schema: FeatureSchema, demo_catalog: Catalog) -> Simulator:
    return Simulator(demo_schema, demo_catalog, seed=2)


@pytest.fixture(scope="module")
def trained(sim: Simulator, demo_schema: FeatureSchema) -> object:
    data = simulate_impressions(sim, 1500, 2, CHANNELS, seed=4)
    return train_propensity_model(data, demo_schema, params={"num_leaves": 7},
                                  num_boost_round=40, log_every=0).booster


def test_calibration_gain_and_lift_on_known_scores() -> None:
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1] * 10)
    p = np.tile(np.linspace(0.05, 0.95, 10), 10)
    cal = calibration_curve(y, p, bins=5)
    assert cal["count"] == [20.0] * 5
    assert cal["observed_rate"] == [0.0, 0.0, 0.5, 1.0, 1.0]
    gain, lift = gain_curve(y, p, points=10)
    assert gain["population"][0] == 0.0 and gain["captured"][-1] == 1.0
    assert gain["captured"][2] == pytest.approx(20 / 50)  # top 20 % of rows, all positives
    assert lift["lift"][0] == pytest.approx(2.0) and lift["lift"][-1] == 0.0


def test_candidates_are_scored_as_the_service_scores_them(
    sim: Simulator, demo_schema: FeatureSchema, demo_catalog: Catalog, trained: object,
) -> None:
    data, _ = simulate_logged(sim, 300, CHANNELS, seed=9)
    predict = booster_predict(trained)
    scores = score_candidates(data, predict, demo_schema, demo_catalog)
    rows = np.arange(len(data))
    # The logged row itself is one of the candidate rows: same score for the logged action.
    np.testing.assert_allclose(scores.propensity[rows, data.action_idx], predict(data.x),
                               rtol=1e-12)
    for c in CHANNELS:
        mask = data.channel == c
        offered = np.array([c in a.channels for a in demo_catalog.actions])
        assert (scores.offered[mask] == offered).all()
    chosen = scores.engine_choice[scores.engine_choice >= 0]
    assert len(chosen) > 0.9 * len(data)
    picked = np.flatnonzero(scores.engine_choice >= 0)
    assert scores.eligible[picked, scores.engine_choice[picked]].all()
    constant = [i for i, a in enumerate(demo_catalog.actions) if a.value is not None]
    assert constant
    for i in constant:
        where = scores.offered[:, i]
        np.testing.assert_array_equal(scores.value[where, i], demo_catalog.actions[i].value)


def test_evaluation_report_files(
    sim: Simulator, demo_schema: FeatureSchema, demo_catalog: Catalog, trained: object,
    tmp_path: Path,
) -> None:
    data, _ = simulate_logged(sim, 2000, CHANNELS, seed=10, start_customer=50_000)
    ev = evaluate_model(data, booster_predict(trained), demo_schema, demo_catalog,
                        n_bootstrap=50)
    page = write_report(ev, tmp_path / "r", title="t", info={"model": "m"})
    for name in FILES:
        assert (tmp_path / "r" / name).is_file(), name
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    m = doc["evaluation"]["metrics"]
    assert 0.5 < m["auc"] <= 1 and m["n"] == 2000 and len(m["lift"]["lift"]) == 10
    ope = doc["evaluation"]["ope"]
    assert ope["estimates"]["dr"]["lower"] <= ope["estimates"]["dr"]["value"] \
        <= ope["estimates"]["dr"]["upper"]
    assert ope["diagnostics"]["n"] == 2000
    text = page.read_text()
    assert "<img src='ope.png'>" in text and "Effective sample size" in text
    assert sum(doc["evaluation"]["served_share"].values()) == pytest.approx(1.0, abs=0.1)


def _export_part(path: Path, data: Dataset, decision_ts: np.ndarray, model_version: str,
                 control: np.ndarray) -> None:
    """Write a part file in the `nba logs export` impressions layout (docs/closed-loop.md)."""
    data.save(path)
    table = pq.read_table(path)
    meta = table.schema.metadata
    table = table.append_column("decision_id", pa.array([f"d{i}" for i in range(len(data))]))
    table = table.append_column("decision_ts", pa.array(decision_ts.astype("datetime64[ms]"),
                                                        pa.timestamp("ms", tz="UTC")))
    table = table.append_column("model_version", pa.array([model_version] * len(data)))
    table = table.append_column("control_group", pa.array(control))
    table = table.append_column("explored", pa.array(np.zeros(len(data), bool)))
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_logs_dataset_reads_every_part_and_filters(sim: Simulator, demo_schema: FeatureSchema,
                                                   tmp_path: Path) -> None:
    a, _ = simulate_logged(sim, 100, CHANNELS, seed=1)
    b, _ = simulate_logged(sim, 60, ["WEB"], seed=2, start_customer=1000)
    b.action_ids = list(reversed(b.action_ids))  # parts may list ids in another order
    b.action_idx = (len(b.action_ids) - 1 - b.action_idx).astype(np.int32)
    root = tmp_path / "export" / "impressions"
    t0 = np.datetime64("2024-03-01T10:00:00", "ms")
    control = np.zeros(100, bool)
    control[:10] = True
    _export_part(root / "date=2024-03-01" / "channel=WEB" / "part-1_2.parquet", a,
                 t0 + np.arange(100) * 1000, "m1", control)
    _export_part(root / "date=2024-03-02" / "channel=WEB" / "part-3_4.parquet", b,
                 t0 + np.timedelta64(1, "D") + np.arange(60) * 1000, "m2", np.zeros(60, bool))
    logs = load_logs(tmp_path / "export", demo_schema)
    assert len(logs.dataset) == 90 + 60 and len(logs.files) == 2
    ids = np.asarray(logs.dataset.action_ids)
    expected = np.concatenate([np.asarray(a.action_ids)[a.action_idx[10:]],
                               np.asarray(b.action_ids)[b.action_idx]])
    assert (ids[logs.dataset.action_idx] == expected).all()
    np.testing.assert_array_equal(logs.dataset.x, np.vstack([a.x[10:], b.x]))
    assert logs.dataset.window[0].startswith("2024-03-01T10:00:10")
    only_m2 = load_logs(tmp_path / "export", demo_schema, model_versions=["m2"])
    assert len(only_m2.dataset) == 60
    first_day = load_logs(tmp_path / "export", demo_schema, until="2024-03-02T00:00:00")
    assert len(first_day.dataset) == 90
    everything = load_logs(tmp_path / "export", demo_schema, include_control=True)
    assert len(everything.dataset) == 160
    with pytest.raises(DatasetError, match="no impressions/ directory"):
        load_logs(tmp_path, demo_schema)


def test_concat_refuses_mixed_schemas(sim: Simulator) -> None:
    a, _ = simulate_logged(sim, 20, CHANNELS, seed=1)
    b, _ = simulate_logged(sim, 20, CHANNELS, seed=2)
    b.schema_hash = "other"
    with pytest.raises(DatasetError, match="different schemas"):
        concat_datasets([a, b])
