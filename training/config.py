"""The training configuration file (examples/train.yaml), validated field by field.

Paths in the file are relative to the file itself, so a config and its schema and catalog can
be moved together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ConfigError",
    "DaskConfig",
    "SimulationConfig",
    "TrainConfig",
    "TrainingConfig",
    "load_config",
]

# Forced on every run: the same config must rebuild the same model byte for byte.
REPRODUCIBLE_PARAMS = {"deterministic": True, "force_row_wise": True}
RESERVED_PARAMS = ("objective", "seed", "num_threads", "deterministic", "force_row_wise",
                   "metric", "is_unbalance", "scale_pos_weight", "verbosity", "verbose")


class ConfigError(ValueError):
    """The training config is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulationConfig(_Strict):
    """How to generate a training set when no dataset file is given."""

    customers: int = Field(20_000, ge=1, description="Simulated customers")
    impressions_per_customer: int = Field(5, ge=1, description="Visits per customer")
    channels: dict[str, float] | list[str] = Field(
        default_factory=lambda: ["WEB", "MOBILE_APP", "CALL_CENTRE", "CHAT", "EMAIL", "BRANCH"],
        description="Channels visited: a list (uniform) or channel -> weight",
    )
    logging_policy: Literal["random", "epsilon_greedy"] = "random"
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="Exploration of epsilon_greedy")
    start: datetime = Field(datetime(2024, 1, 1, tzinfo=UTC), description="Data window start")
    days: float = Field(28.0, gt=0, description="Data window length in days")
    seed: int | None = Field(None, ge=0,
                             description="Simulator seed; defaults to the top-level seed")

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=UTC)


class TrainingConfig(_Strict):
    """LightGBM training: rounds, early stopping, class imbalance and booster parameters."""

    num_boost_round: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(30, ge=0, description="0 disables early stopping")
    valid_fraction: float = Field(0.2, gt=0.0, lt=1.0,
                                  description="Share of customers held out for validation")
    num_threads: int = Field(2, ge=1, description="Fixed for reproducibility")
    log_every: int = Field(25, ge=0, description="Log validation metrics every k rounds")
    class_imbalance: Literal["none", "is_unbalance", "scale_pos_weight"] = Field(
        "none",
        description="Reweighting distorts probabilities (bad for P x V arbitration); "
                    "'none' keeps them calibrated",
    )
    scale_pos_weight: float | None = Field(
        None, gt=0, description="With class_imbalance=scale_pos_weight; None -> n_neg / n_pos",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Extra LightGBM params")

    @field_validator("params")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(v) & set(RESERVED_PARAMS))
        if reserved:
            raise ValueError(f"set {reserved} through their own config fields, not 'params'")
        return v


class DaskConfig(_Strict):
    """Distributed training with lightgbm.dask (see training/dask_train.py)."""

    enabled: bool = Field(False, description="Train with DaskLGBMClassifier")
    scheduler: str | None = Field(
        None, description="Scheduler address (tcp://host:8786); None starts a LocalCluster"
    )
    n_workers: int = Field(2, ge=1, description="LocalCluster workers")
    threads_per_worker: int = Field(1, ge=1, description="LightGBM threads per worker")
    processes: bool = Field(False, description="LocalCluster workers as processes")
    partitions: int | None = Field(None, ge=1,
                                   description="Row partitions of an in-memory dataset")


class TrainConfig(_Strict):
    name: str = Field("propensity", pattern=r"^[a-z0-9][a-z0-9_.-]*$",
                      description="Model name: the prefix of model_version")
    schema_path: Path = Field(alias="schema", description="Feature schema YAML")
    catalog_path: Path = Field(alias="catalog", description="Action catalog YAML")
    dataset: Path | None = Field(None, description="Parquet dataset instead of simulating")
    seed: int = Field(7, ge=0)
    simulation: SimulationConfig = Field(
        default_factory=lambda: SimulationConfig.model_validate({})
    )
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig.model_validate({}))
    dask: DaskConfig = Field(default_factory=lambda: DaskConfig.model_validate({}))
    golden_rows: int = Field(64, ge=1, le=10_000, description="Training rows in golden.npz")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config; relative paths resolve against its directory."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    try:
        cfg = TrainConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{p}: {problems}") from None
    base = p.resolve().parent

    def rel(q: Path | None) -> Path | None:
        return None if q is None else (q if q.is_absolute() else base / q)

    return cfg.model_copy(update={
        "schema_path": rel(cfg.schema_path), "catalog_path": rel(cfg.catalog_path),
        "dataset": rel(cfg.dataset),
    })
