"""Pure logic of the closed loop: outcome configuration, the log entry format, labelling."""

from __future__ import annotations

import copy
from pathlib import Path

import msgpack
import numpy as np
import pytest
import yaml

from features.schema import FeatureSchema
from nba_service.engine.catalog import CatalogError, parse_catalog
from nba_service.engine.outcome_fields import (
    DEFAULT_OUTCOMES,
    OutcomeFieldError,
    parse_action_outcomes,
    parse_outcome_defaults,
)
from nba_service.logs.tables import impressions_table
from nba_service.store.log_format import (
    LogFormatError,
    OutcomeEntry,
    decode_decision,
    decode_outcome,
    encode_decision,
    encode_outcome,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_outcome_defaults_and_overrides() -> None:
    assert parse_outcome_defaults(None) is DEFAULT_OUTCOMES
    d = parse_outcome_defaults({"response_window": "3d", "weights": {"click": 0.5}})
    assert d.response_window_s == 3 * 86400
    assert d.weight("click", 0) == 0.5 and d.weight("accept", 0) == 1.0
    assert d.weight("conversion", 42.0) == 42.0 and d.is_positive("conversion")
    assert not d.is_positive("reject") and d.weight("unknown", 9) == 0.0
    a = parse_action_outcomes("12h", {"accept": 2}, d)
    assert (a.response_window_s, a.weight("accept", 0), a.weight("click", 0)) == (43200, 2, 0.5)
    assert parse_action_outcomes(None, None, d) is d


@pytest.mark.parametrize(("window", "weights", "field"), [
    ("soon", None, "response_window"), ("0s", None, "response_window"),
    (None, {"purchase": 1}, "outcome_weights"), (None, {"click": "lots"}, "outcome_weights"),
    (None, [1, 2], "outcome_weights"),
])
def test_bad_outcome_config_names_the_field(window: object, weights: object, field: str) -> None:
    with pytest.raises(OutcomeFieldError) as exc:
        parse_action_outcomes(window, weights, DEFAULT_OUTCOMES)
    assert exc.value.field == field


def test_catalog_carries_outcome_config_and_rejects_bad_ones(demo_schema: FeatureSchema) -> None:
    doc = yaml.safe_load((EXAMPLES / "catalog.yaml").read_text())
    cat = parse_catalog(doc, demo_schema)
    mortgage = cat.actions[cat.index_of("mortgage_first_home")].outcomes
    assert mortgage.response_window_s == 30 * 86400 and mortgage.weight("accept", 0) == 2.0
    assert cat.actions[0].outcomes.response_window_s == 7 * 86400
    bad = copy.deepcopy(doc)
    bad["actions"][0]["response_window"] = "never"
    with pytest.raises(CatalogError, match=r"action 'card_gold': field 'response_window'"):
        parse_catalog(bad, demo_schema)
    bad = copy.deepcopy(doc)
    bad["outcomes"] = {"weights": {"click": None}}
    with pytest.raises(CatalogError, match="outcomes.weights"):
        parse_catalog(bad, demo_schema)


def _entry(**over: object) -> bytes:
    f = 4
    args: dict[str, object] = dict(
        decision_id="0190000000aa" + "00" * 10, ts_ms=1_700_000_000_000, customer_id="C1",
        channel="WEB", placement="hero", request_id="r", model_version="m1",
        catalog_version="c1", schema_hash="s1", explored=True, control_group=False,
        degraded=["stale_features:x"], customer_row=np.array([1, np.nan, 3, 4], np.float32),
        candidate_ids=["a", "b", "c"],
        candidate_scores=np.arange(15, dtype=np.float64).reshape(3, 5),
        candidate_stage=np.array([0, 3, 13], np.uint8), served_ids=["a", "b"],
        served_probability=[0.9, 0.1], served_rows=np.arange(2 * f, dtype=np.float32).reshape(2, f),
        served_windows_s=[60.0, 120.0], served_scores=list(range(10)),
        shadow={"m2": [0.1, 0.2, 0.3]},
    )
    args.update(over)
    return encode_decision(**args)  # type: ignore[arg-type]


def test_decision_entry_round_trips_exact_bytes() -> None:
    e = decode_decision(_entry(), n_features=4)
    assert (e.customer, e.channel, e.placement, e.explored, e.control_group) == (
        "C1", "WEB", "hero", True, False)
    assert e.customer_row.tobytes() == np.array([1, np.nan, 3, 4], np.float32).tobytes()
    assert e.served_rows.shape == (2, 4) and e.served_rows[1, 3] == 7
    assert e.candidate_scores.shape == (3, 5) and e.candidate_scores[2, 4] == 14
    assert list(e.candidate_stage) == [0, 3, 13]
    assert e.served_scores[1].tolist() == [5, 6, 7, 8, 9]
    assert e.shadow == {"m2": pytest.approx([0.1, 0.2, 0.3])}


def test_bad_entries_are_rejected() -> None:
    with pytest.raises(LogFormatError, match="version"):
        decode_decision(msgpack.packb({"v": 99}))
    with pytest.raises(LogFormatError, match="features"):
        decode_decision(_entry(), n_features=5)
    with pytest.raises(LogFormatError, match="sizes"):
        decode_decision(_entry(served_ids=["a"]))
    with pytest.raises(LogFormatError):
        decode_decision(b"\xc1not msgpack")
    with pytest.raises(LogFormatError):
        decode_outcome({b"ev": b"x"})


def test_outcome_entry_round_trip() -> None:
    raw = encode_outcome(event_id="e", decision_id="d", action_id="a", customer_id="C1",
                         outcome="accept", value=2.5, ts_ms=5, channel=None)
    o = decode_outcome({k.encode(): v.encode() for k, v in raw.items()})
    assert o == OutcomeEntry("e", "d", "a", "C1", "accept", 2.5, 5, "")


def test_labels_rewards_and_implicit_negatives() -> None:
    e = decode_decision(_entry(), n_features=4)
    t0 = e.ts_ms

    def out(ev: str, aid: str, outcome: str, dt_s: float, value: float = 0.0) -> OutcomeEntry:
        return OutcomeEntry(ev, e.decision_id, aid, "C1", outcome, value, t0 + int(dt_s * 1000), "")

    outcomes = [out("1", "a", "click", 5), out("2", "a", "conversion", 30, 80.0),
                out("2", "a", "conversion", 30, 80.0),  # replayed event: counted once
                out("3", "b", "accept", 121)]  # after b's 120 s window: not b's response
    table = impressions_table(
        [e], lambda _: outcomes, ["f0", "f1", "f2", "f3"], lambda _: DEFAULT_OUTCOMES,
        schema_hash="s1", action_ids=["a", "b"], first_id="1-0", last_id="1-0")
    rows = table.to_pylist()
    a, b = rows
    assert (a["label"], a["reward"], a["n_click"], a["n_conversion"]) == (1, 80.0, 1, 1)
    assert a["outcome_value"] == 80.0 and a["logged_propensity"] == 0.9 and a["rank"] == 1
    assert (b["label"], b["reward"], b["n_accept"]) == (0, 0.0, 0)  # implicit negative
    assert b["first_response_ts"] is None
    assert [a[f"f{j}"] for j in range(4)] == [0, 1, 2, 3]
    assert b"nba.dataset" in (table.schema.metadata or {})
