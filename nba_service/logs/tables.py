"""Arrow tables of the export: impressions (labelled), decisions and outcomes.

The column contract is documented in docs/closed-loop.md; the training package reads it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from nba_service.engine.outcome_fields import DEFAULT_OUTCOMES, OUTCOME_NAMES, OutcomeConfig
from nba_service.engine.reasons import stage_name
from nba_service.store.log_format import DecisionEntry, OutcomeEntry

__all__ = [
    "DATASET_META_KEY",
    "decisions_table",
    "impressions_table",
    "outcomes_table",
    "utc_date",
]

DATASET_META_KEY = b"nba.dataset"  # the key training.dataset.Dataset.load reads
_TS = pa.timestamp("ms", tz="UTC")


def utc_date(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat()


def outcomes_table(rows: Sequence[OutcomeEntry]) -> pa.Table:
    return pa.table({
        "event_id": pa.array([o.event_id for o in rows], pa.string()),
        "decision_id": pa.array([o.decision_id for o in rows], pa.string()),
        "action_id": pa.array([o.action_id for o in rows], pa.string()),
        "customer_id": pa.array([o.customer for o in rows], pa.string()),
        "outcome": pa.array([o.outcome for o in rows], pa.string()),
        "channel": pa.array([o.channel for o in rows], pa.string()),
        "value": pa.array([o.value for o in rows], pa.float64()),
        "outcome_ts": pa.array([o.ts_ms for o in rows], _TS),
    })


def decisions_table(rows: Sequence[DecisionEntry]) -> pa.Table:
    def f64(col: int) -> pa.Array:
        return pa.array([e.candidate_scores[:, col].tolist() for e in rows],
                        pa.list_(pa.float64()))

    return pa.table({
        "decision_id": pa.array([e.decision_id for e in rows], pa.string()),
        "customer_id": pa.array([e.customer for e in rows], pa.string()),
        "logged_channel": pa.array([e.channel for e in rows], pa.string()),
        "placement": pa.array([e.placement for e in rows], pa.string()),
        "request_id": pa.array([e.request_id for e in rows], pa.string()),
        "decision_ts": pa.array([e.ts_ms for e in rows], _TS),
        "model_version": pa.array([e.model_version for e in rows], pa.string()),
        "catalog_version": pa.array([e.catalog_version for e in rows], pa.string()),
        "schema_hash": pa.array([e.schema_hash for e in rows], pa.string()),
        "explored": pa.array([e.explored for e in rows], pa.bool_()),
        "control_group": pa.array([e.control_group for e in rows], pa.bool_()),
        "degraded_reasons": pa.array([e.degraded for e in rows], pa.list_(pa.string())),
        "served_action_ids": pa.array([e.served_ids for e in rows], pa.list_(pa.string())),
        "served_selection_probability": pa.array([e.served_probability for e in rows],
                                                 pa.list_(pa.float64())),
        "candidate_action_ids": pa.array([e.candidate_ids for e in rows], pa.list_(pa.string())),
        "candidate_propensity": f64(0),
        "candidate_context_weight": f64(1),
        "candidate_value": f64(2),
        "candidate_lever": f64(3),
        "candidate_priority": f64(4),
        "candidate_removed_by": pa.array(
            [["" if s == 0 else stage_name(int(s)) for s in e.candidate_stage] for e in rows],
            pa.list_(pa.string())),
        "customer_row": pa.array([e.customer_row.tobytes() for e in rows], pa.binary()),
        "shadow_scores": pa.array([json.dumps(e.shadow, sort_keys=True) if e.shadow else ""
                                   for e in rows], pa.string()),
    })


def impressions_table(
    rows: Sequence[DecisionEntry],
    outcomes_of: Callable[[str], Iterable[OutcomeEntry]],
    feature_names: Sequence[str],
    outcome_config: Callable[[str], OutcomeConfig],
    *,
    schema_hash: str,
    action_ids: Sequence[str],
    first_id: str,
    last_id: str,
) -> pa.Table:
    """One labelled row per served action of `rows` (all of whose windows have closed)."""
    n_f = len(feature_names)
    k_total = sum(len(e.served_ids) for e in rows)
    x = np.empty((k_total, n_f), dtype=np.float32)
    cols: dict[str, list[object]] = defaultdict(list)
    counts = {o: np.zeros(k_total, dtype=np.int32) for o in OUTCOME_NAMES}
    i = 0
    for e in rows:
        by_action: dict[str, list[OutcomeEntry]] = defaultdict(list)
        seen: set[str] = set()
        for o in outcomes_of(e.decision_id):
            if o.event_id not in seen:  # the outcome log is exactly-once; be safe anyway
                seen.add(o.event_id)
                by_action[o.action_id].append(o)
        for k, aid in enumerate(e.served_ids):
            x[i] = e.served_rows[k]
            window_ms = e.served_windows_s[k] * 1000
            cfg = outcome_config(aid)
            reward, value, first = 0.0, 0.0, None
            positive = False
            for o in by_action.get(aid, ()):
                if o.ts_ms > e.ts_ms + window_ms:
                    continue  # after the window: not this impression's response
                if o.outcome in counts:
                    counts[o.outcome][i] += 1
                value += o.value
                reward = max(reward, cfg.weight(o.outcome, o.value))
                positive = positive or cfg.is_positive(o.outcome)
                if o.outcome != "impression" and (first is None or o.ts_ms < first):
                    first = o.ts_ms
            p, c, v, lev, pri = (float(s) for s in e.served_scores[k])
            cols["label"].append(1 if positive else 0)
            cols["logged_action_id"].append(aid)
            cols["logged_channel"].append(e.channel)
            cols["logged_propensity"].append(e.served_probability[k])
            cols["customer_id"].append(e.customer)
            cols["decision_id"].append(e.decision_id)
            cols["decision_ts"].append(e.ts_ms)
            cols["placement"].append(e.placement)
            cols["rank"].append(k + 1)
            for name, val in (("propensity", p), ("context_weight", c), ("value", v),
                              ("lever", lev), ("priority", pri)):
                cols[name].append(val)
            cols["explored"].append(e.explored)
            cols["control_group"].append(e.control_group)
            cols["model_version"].append(e.model_version)
            cols["catalog_version"].append(e.catalog_version)
            cols["schema_hash"].append(e.schema_hash)
            cols["response_window_s"].append(e.served_windows_s[k])
            cols["outcome_value"].append(value)
            cols["reward"].append(reward)
            cols["first_response_ts"].append(first)
            i += 1
    arrays: dict[str, pa.Array] = {name: pa.array(x[:, j]) for j, name in enumerate(feature_names)}
    types: Mapping[str, pa.DataType] = {
        "label": pa.int8(), "decision_ts": _TS, "first_response_ts": _TS, "rank": pa.int16(),
        "explored": pa.bool_(), "control_group": pa.bool_(),
    }
    for name in ("label", "logged_action_id", "logged_channel", "logged_propensity",
                 "customer_id", "decision_id", "decision_ts", "placement", "rank", "propensity",
                 "context_weight", "value", "lever", "priority", "explored", "control_group",
                 "model_version", "catalog_version", "schema_hash", "response_window_s"):
        arrays[name] = pa.array(cols[name], types.get(name))
    for outcome in OUTCOME_NAMES:
        arrays[f"n_{outcome}"] = pa.array(counts[outcome])
    for name in ("outcome_value", "reward", "first_response_ts"):
        arrays[name] = pa.array(cols[name], types.get(name, pa.float64()))
    ts = [e.ts_ms for e in rows]
    ids = sorted(set(action_ids) | {str(a) for a in cols["logged_action_id"]})
    meta = {
        "schema_hash": schema_hash, "action_ids": ids,
        "window": [_iso(min(ts)), _iso(max(ts))] if ts else ["", ""],
        "logging_policy": "nba-service",
        "extra": {"source": "decision-log", "first_id": first_id, "last_id": last_id},
    }
    return pa.table(arrays).replace_schema_metadata({DATASET_META_KEY: json.dumps(meta)})


def default_outcome_config(_: str) -> OutcomeConfig:
    return DEFAULT_OUTCOMES
