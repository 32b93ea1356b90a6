"""Logged-bandit-feedback tables (Open Bandit Dataset style): loading, errors, OPE with a
known truth, and the `python -m training bandit` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from training.__main__ import main
from training.bandit_dataset import load_bandit_table
from training.bandit_eval import evaluate_bandit_table
from training.dataset import DatasetError

N_ITEMS = 8


def obd_table(n: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """An OBD-shaped log (uniform random logging) and each row's true click probabilities."""
    rng = np.random.default_rng(seed)
    user = [rng.choice(["a1", "b2", "c3", "d4"], n) for _ in range(3)]
    affinity = rng.normal(size=(n, N_ITEMS))
    taste = np.where(user[0] == "a1", 1.2, np.where(user[0] == "b2", -0.6, 0.0))
    item_bias = np.linspace(-0.8, 0.8, N_ITEMS)
    logit = -2.2 + item_bias + 0.9 * affinity + np.outer(taste, np.linspace(-1, 1, N_ITEMS))
    p = 1 / (1 + np.exp(-logit))
    item = rng.integers(0, N_ITEMS, n)
    click = (rng.random(n) < p[np.arange(n), item]).astype(np.int64)
    cols: dict[str, object] = {
        "timestamp": pa.array(np.arange(n) * 1000, pa.int64()),
        "item_id": pa.array(item), "position": pa.array(rng.integers(1, 4, n)),
        "click": pa.array(click), "propensity_score": pa.array(np.full(n, 1 / N_ITEMS)),
    }
    for j, u in enumerate(user):
        cols[f"user_feature_{j}"] = pa.array(u.tolist(), pa.string())
    for k in range(N_ITEMS):
        cols[f"user-item_affinity_{k}"] = pa.array(affinity[:, k])
    return pa.table(cols), p


def test_loads_an_obd_style_csv_with_the_preset(tmp_path: Path) -> None:
    table, _ = obd_table(500, seed=1)
    path = tmp_path / "obd.csv"
    pacsv.write_csv(table, path)
    t = load_bandit_table(path, preset="obd")
    assert len(t) == 500
    assert t.action_ids == [str(i) for i in range(N_ITEMS)]
    assert "timestamp" not in t.feature_names and "item_id" not in t.feature_names
    assert t.feature_names[0] == "position"
    assert t.categorical == ["user_feature_0", "user_feature_1", "user_feature_2"]
    assert t.categories["user_feature_0"] == ["a1", "b2", "c3", "d4"]
    assert t.binary_reward
    np.testing.assert_allclose(t.propensity, 1 / N_ITEMS)
    assert t.x.dtype == np.float32 and t.x.shape == (500, 1 + 3 + N_ITEMS)
    raw = table.column("item_id").to_numpy()
    assert [t.action_ids[a] for a in t.action[:20]] == [str(v) for v in raw[:20]]


def test_explicit_columns_and_parquet(tmp_path: Path) -> None:
    table, _ = obd_table(200, seed=2)
    table = table.rename_columns(["ts", "arm", "slot", "r", "p", *table.column_names[5:]])
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    t = load_bandit_table(path, action_col="arm", reward_col="r", propensity_col="p",
                          features=["slot", "user_feature_0"])
    assert t.feature_names == ["slot", "user_feature_0"] and len(t) == 200


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop(["click"]), r"missing column\(s\) \['click'\]"),
        (lambda t: t.set_column(4, "propensity_score", pa.array([0.0] * t.num_rows)),
         "'propensity_score' row 0"),
        (lambda t: t.set_column(3, "click", pa.array([None] * t.num_rows, pa.float64())),
         "'click' row 0"),
        (lambda t: t.set_column(3, "click", pa.array(["yes"] * t.num_rows)), "must be numeric"),
    ],
)
def test_bad_tables_name_the_column(tmp_path: Path, mutate: object, message: str) -> None:
    table, _ = obd_table(50, seed=3)
    path = tmp_path / "bad.parquet"
    pq.write_table(mutate(table), path)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=message):
        load_bandit_table(path, preset="obd")


@pytest.mark.slow
def test_greedy_policy_evaluated_on_a_logged_table_covers_its_true_value(tmp_path: Path
                                                                          ) -> None:
    table, p = obd_table(40_000, seed=4)
    path = tmp_path / "obd.parquet"
    pq.write_table(table, path)
    t = load_bandit_table(path, preset="obd")
    ev, model, rows = evaluate_bandit_table(t, seed=3, n_bootstrap=200)
    assert ev.ope is not None and ev.pi is not None
    # Truth: the greedy policy's true click rate on the evaluation contexts.
    order = [int(a) for a in t.action_ids]
    truth = float((ev.pi * p[rows][:, order]).sum(axis=1).mean())
    logged_truth = float(p[rows].mean())
    assert truth > logged_truth * 1.5  # the learnt policy is much better than random
    for name in ("ips", "snips", "dr"):
        assert ev.ope.estimates[name].covers(truth), (name, ev.ope.estimates[name], truth)
    assert ev.ope.logged.covers(logged_truth)
    assert ev.ope.estimates["dr"].lower > ev.ope.logged.upper
    assert ev.metrics.auc > 0.6


@pytest.mark.slow
def test_bandit_command_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    table, _ = obd_table(6000, seed=5)
    path = tmp_path / "obd.csv"
    pacsv.write_csv(table, path)
    out = tmp_path / "report"
    assert main(["-q", "bandit", "--table", str(path), "--preset", "obd", "--out", str(out),
                 "--bootstrap", "50"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert set(doc["evaluation"]["ope"]["estimates"]) == {"ips", "snips", "dm", "dr"}
    assert (out / "reward_model.txt").read_text().startswith("tree")
    for png in ("calibration.png", "gain.png", "lift.png", "ope.png", "weights.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "new policy    DR" in capsys.readouterr().out
    assert main(["-q", "bandit", "--table", str(path), "--out", str(out)]) == 2
