"""Byte format of the decision log and the outcome log (Redis Streams).

One decision is one stream entry with a single field `d`: a msgpack map with short keys. Arrays
travel as raw little-endian bytes (msgpack `bin`), which is both the most compact encoding and
the exact bytes the model saw, so training can rebuild the row bit for bit.

Decision entry (format version `v` = 1):

    v    int      format version
    id   str      decision id            ts   int    decision time, ms since the epoch (UTC)
    cust str      customer reference     ch   str    channel      pl   str   placement
    rq   str      request id             mv   str    model version
    cv   str      catalog version        sh   str    feature schema hash
    ex   bool     explored               cg   bool   control group
    dg   [str]    degraded reasons
    row  bin      customer row: float32 x F, ACTION columns NaN (point-in-time features)
    cid  [str]    candidate action ids (catalog order)
    cs   bin      float32 (n, 5): propensity, context weight, value, lever, priority per candidate
                  (float32 halves the largest field; the served actions' exact values are in sc)
    crm  bin      uint8 per candidate: the Stage code that removed it (0 = served)
    sid  [str]    served action ids, rank order        sp  [float]  their selection probabilities
    sx   bin      float32 (k, F): the served actions' model input rows
    sw   [float]  the served actions' response windows, seconds
    sc   [float]  the served actions' P, C, V, L, priority (k x 5, row-major)
    sdw  map      shadow (challenger) scores when present: model version -> [score per candidate]

Outcome entry: plain string fields, readable with `XRANGE` in redis-cli:
`ev` event id, `did` decision id, `aid` action id, `cust` customer reference, `o` outcome,
`val` value, `ts` ms, `ch` channel ("" unknown), `re` "1" when appended by the replay of an
event whose first append was not confirmed (the exporter keeps the first of the two).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "DecisionEntry",
    "OutcomeEntry",
    "customer_ref",
    "decode_decision",
    "decode_outcome",
    "encode_decision",
    "encode_outcome",
]

FORMAT_VERSION = 1
_LE_F32 = np.dtype("<f4")


def customer_ref(customer_id: str) -> str:
    """The customer reference written to every log. The one place to pseudonymise it."""
    return customer_id


@dataclass(frozen=True)
class DecisionEntry:
    """A decoded decision log entry (see the module docstring for the fields)."""

    decision_id: str
    ts_ms: int
    customer: str
    channel: str
    placement: str
    request_id: str
    model_version: str
    catalog_version: str
    schema_hash: str
    explored: bool
    control_group: bool
    degraded: list[str]
    customer_row: np.ndarray  # float32 (F,)
    candidate_ids: list[str]
    candidate_scores: np.ndarray  # float64 (n, 5)
    candidate_stage: np.ndarray  # uint8 (n,)
    served_ids: list[str]
    served_probability: list[float]
    served_rows: np.ndarray  # float32 (k, F)
    served_windows_s: list[float]
    served_scores: np.ndarray  # float64 (k, 5)
    shadow: Mapping[str, list[float]] | None


def encode_decision(
    *,
    decision_id: str,
    ts_ms: int,
    customer_id: str,
    channel: str,
    placement: str,
    request_id: str,
    model_version: str,
    catalog_version: str,
    schema_hash: str,
    explored: bool,
    control_group: bool,
    degraded: Sequence[str],
    customer_row: np.ndarray,
    candidate_ids: Sequence[str],
    candidate_scores: np.ndarray,
    candidate_stage: np.ndarray,
    served_ids: Sequence[str],
    served_probability: Sequence[float],
    served_rows: np.ndarray,
    served_windows_s: Sequence[float],
    served_scores: Sequence[float],
    shadow: Mapping[str, Sequence[float]] | None = None,
) -> bytes:
    doc: dict[str, Any] = {
        "v": FORMAT_VERSION, "id": decision_id, "ts": int(ts_ms),
        "cust": customer_ref(customer_id), "ch": channel, "pl": placement, "rq": request_id,
        "mv": model_version, "cv": catalog_version, "sh": schema_hash,
        "ex": bool(explored), "cg": bool(control_group), "dg": list(degraded),
        "row": np.ascontiguousarray(customer_row, dtype=_LE_F32).tobytes(),
        "cid": list(candidate_ids),
        "cs": np.ascontiguousarray(candidate_scores, dtype=_LE_F32).tobytes(),
        "crm": np.ascontiguousarray(candidate_stage, dtype=np.uint8).tobytes(),
        "sid": list(served_ids), "sp": [float(p) for p in served_probability],
        "sx": np.ascontiguousarray(served_rows, dtype=_LE_F32).tobytes(),
        "sw": [float(w) for w in served_windows_s],
        "sc": [float(s) for s in served_scores],
    }
    if shadow:
        doc["sdw"] = {str(k): [float(s) for s in v] for k, v in shadow.items()}
    return msgpack.packb(doc, use_bin_type=True)


class LogFormatError(ValueError):
    """A log entry cannot be decoded (unknown version, truncated, wrong shapes)."""


def decode_decision(blob: bytes, n_features: int | None = None) -> DecisionEntry:
    try:
        d = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise LogFormatError(f"not a msgpack decision entry: {exc}") from None
    if not isinstance(d, dict) or d.get("v") != FORMAT_VERSION:
        raise LogFormatError(f"unsupported decision entry version {d.get('v')!r}"
                             if isinstance(d, dict) else "decision entry is not a map")
    row = np.frombuffer(d["row"], dtype=_LE_F32)
    f = len(row) if n_features is None else n_features
    if len(row) != f:
        raise LogFormatError(f"customer row has {len(row)} features, expected {f}")
    n, k = len(d["cid"]), len(d["sid"])
    scores = np.frombuffer(d["cs"], dtype=_LE_F32).astype(np.float64)
    stage = np.frombuffer(d["crm"], dtype=np.uint8)
    sx = np.frombuffer(d["sx"], dtype=_LE_F32)
    if scores.size != n * 5 or stage.size != n or sx.size != k * f or len(d["sc"]) != k * 5:
        raise LogFormatError(f"decision {d.get('id')!r}: array sizes do not match "
                             f"{n} candidates / {k} served")
    return DecisionEntry(
        decision_id=d["id"], ts_ms=int(d["ts"]), customer=d["cust"], channel=d["ch"],
        placement=d["pl"], request_id=d["rq"], model_version=d["mv"],
        catalog_version=d["cv"], schema_hash=d["sh"], explored=bool(d["ex"]),
        control_group=bool(d["cg"]), degraded=list(d["dg"]), customer_row=row,
        candidate_ids=list(d["cid"]), candidate_scores=scores.reshape(n, 5),
        candidate_stage=stage, served_ids=list(d["sid"]),
        served_probability=[float(p) for p in d["sp"]], served_rows=sx.reshape(k, f),
        served_windows_s=[float(w) for w in d["sw"]],
        served_scores=np.asarray(d["sc"], dtype=np.float64).reshape(k, 5),
        shadow=d.get("sdw"),
    )


@dataclass(frozen=True)
class OutcomeEntry:
    event_id: str
    decision_id: str
    action_id: str
    customer: str
    outcome: str
    value: float
    ts_ms: int
    channel: str
    replay: bool = False  # appended by a replay: the first append may have landed after all


def encode_outcome(
    *, event_id: str, decision_id: str, action_id: str, customer_id: str, outcome: str,
    value: float, ts_ms: int, channel: str | None, replay: bool = False,
) -> dict[str, str]:
    fields = {
        "ev": event_id, "did": decision_id, "aid": action_id,
        "cust": customer_ref(customer_id), "o": outcome, "val": repr(float(value)),
        "ts": str(int(ts_ms)), "ch": channel or "",
    }
    if replay:
        fields["re"] = "1"
    return fields


def decode_outcome(fields: Mapping[bytes, bytes]) -> OutcomeEntry:
    try:
        value = float(fields[b"val"])
        return OutcomeEntry(
            event_id=fields[b"ev"].decode(), decision_id=fields[b"did"].decode(),
            action_id=fields[b"aid"].decode(), customer=fields[b"cust"].decode(),
            outcome=fields[b"o"].decode(), value=value if math.isfinite(value) else 0.0,
            ts_ms=int(fields[b"ts"]), channel=fields[b"ch"].decode(),
            replay=fields.get(b"re") == b"1",
        )
    except (KeyError, ValueError) as exc:
        raise LogFormatError(f"bad outcome entry: {exc}") from None
