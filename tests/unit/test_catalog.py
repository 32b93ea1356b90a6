"""Catalog loading: the demo catalog, and one test per validation error class."""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from features.schema import FeatureSchema
from nba_service.engine.catalog import (
    ActionType,
    CatalogError,
    load_catalog,
    parse_catalog,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


def _base() -> dict[str, Any]:
    """A small valid catalog that each error test breaks in one place."""
    return {
        "channels": {"WEB": {"fallback": ["info_fraud_awareness"]},
                     "CALL_CENTRE": {"fallback": ["info_fraud_awareness"]}},
        "arbitration": {"max_per_group": 1},
        "actions": [
            {"id": "card_gold", "type": "offer", "group": "cards",
             "channels": ["WEB", "CALL_CENTRE"], "value": "0.05 * clv + 20",
             "eligibility": "age >= 21 and not has_credit_card",
             "applicability": "segment in ['gold', 'vip']",
             "treatments": {"default": {"title": "Gold", "text": "Gold card"}}},
            {"id": "info_fraud_awareness", "type": "info", "group": "info",
             "channels": ["WEB", "CALL_CENTRE"], "value": 1, "fallback": True,
             "treatments": {"default": {"title": "Safe", "text": "Stay safe"}}},
        ],
    }


def _error(schema: FeatureSchema, doc: dict[str, Any]) -> str:
    with pytest.raises(CatalogError) as info:
        parse_catalog(doc, schema)
    return str(info.value)


def test_demo_catalog_loads_and_matches_the_action_id_vocabulary(schema: FeatureSchema) -> None:
    path = EXAMPLES / "catalog.yaml"
    cat = load_catalog(path, schema)
    vocab = schema.get("action_id")
    assert vocab is not None
    assert [a.id for a in cat.actions] == list(vocab.vocabulary)
    assert cat.version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert cat.index_of("service_resolve_complaint") == 23
    assert {a.type for a in cat.actions} == set(ActionType)
    assert any(a.mandatory for a in cat.actions)
    groups = schema.get("action_group")
    assert groups is not None and set(cat.groups) <= set(groups.vocabulary)
    for ch, fallbacks in cat.channel_fallbacks.items():
        assert fallbacks, ch
        for i in fallbacks:
            assert cat.actions[i].fallback and not cat.actions[i].has_rules
            assert ch in cat.actions[i].channels
    sbs = cat.arbitration.service_before_sales
    assert sbs is not None and sbs.complaint_feature == "open_complaints"


def test_attributes_give_the_static_value_or_nan(schema: FeatureSchema) -> None:
    cat = parse_catalog(_base(), schema)
    gold, info = cat.actions
    assert gold.attributes()["action_type"] == "offer"
    assert math.isnan(float(gold.attributes()["action_value"]))  # type: ignore[arg-type]
    assert info.attributes() == {"action_id": "info_fraud_awareness", "action_type": "info",
                                 "action_group": "info", "action_value": 1.0}
    assert gold.treatment("WEB").title == "Gold"


def test_version_changes_with_content(schema: FeatureSchema) -> None:
    doc = _base()
    v1 = parse_catalog(doc, schema, yaml.safe_dump(doc)).version
    doc["actions"][1]["value"] = 2
    assert parse_catalog(doc, schema, yaml.safe_dump(doc)).version != v1


def test_unknown_channel_names_action_and_field(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["channels"] = ["WEB", "FAX"]
    msg = _error(schema, doc)
    assert "'card_gold'" in msg and "'channels'" in msg and "'FAX'" in msg


def test_group_outside_vocabulary(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["group"] = "crypto"
    msg = _error(schema, doc)
    assert "'card_gold'" in msg and "'group'" in msg and "'crypto'" in msg


def test_duplicate_id(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"].append(copy.deepcopy(doc["actions"][0]))
    assert "'card_gold': field 'id': duplicate" in _error(schema, doc)


def test_bad_type_and_unknown_field(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["type"] = "upsell"
    assert "field 'type'" in _error(schema, doc)
    doc = _base()
    doc["actions"][0]["eligibilty"] = "age > 1"
    assert "field 'eligibilty': unknown field" in _error(schema, doc)


def test_unknown_feature_in_expression_reports_position(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["eligibility"] = "age >= 21 and not has_credit_crad"
    msg = _error(schema, doc)
    assert "'card_gold'" in msg and "'eligibility'" in msg
    assert "unknown feature 'has_credit_crad'" in msg and "(column 18)" in msg
    assert "age >= 21 and not has_credit_crad" in msg


def test_unknown_category_and_bad_value_expression(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["applicability"] = "segment in ['gold', 'platinum']"
    msg = _error(schema, doc)
    assert "'applicability'" in msg and "'platinum'" in msg and "(column 20)" in msg
    doc = _base()
    doc["actions"][0]["value"] = "0.05 * clv +"
    msg = _error(schema, doc)
    assert "'value'" in msg and "syntax error" in msg


def test_action_features_are_not_rule_inputs(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["suitability"] = "action_value > 3"
    assert "attribute of the candidate action" in _error(schema, doc)


def test_fallback_with_rules(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][1]["eligibility"] = "age > 18"
    msg = _error(schema, doc)
    assert "'info_fraud_awareness'" in msg and "'eligibility'" in msg and "fallback" in msg


def test_channel_without_fallback(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["channels"] = ["WEB", "CALL_CENTRE", "EMAIL"]
    msg = _error(schema, doc)
    assert "'EMAIL'" in msg and "no fallback" in msg and "'card_gold'" in msg
    doc = _base()
    doc["channels"]["WEB"] = {"fallback": []}
    assert "channel 'WEB': field 'fallback'" in _error(schema, doc)


def test_fallback_must_be_offered_and_flagged(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][1]["channels"] = ["CALL_CENTRE"]
    assert "not offered on WEB" in _error(schema, doc)
    doc = _base()
    doc["channels"]["WEB"] = {"fallback": ["card_gold"]}
    assert "not marked 'fallback: true'" in _error(schema, doc)
    doc = _base()
    doc["channels"]["WEB"] = {"fallback": ["nope"]}
    assert "unknown action 'nope'" in _error(schema, doc)


def test_treatments_must_cover_channels(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["treatments"] = {"WEB": {"title": "t", "text": "x"}}
    msg = _error(schema, doc)
    assert "'treatments'" in msg and "CALL_CENTRE" in msg
    doc = _base()
    doc["actions"][0]["treatments"]["SMS"] = {"title": "t", "text": "x"}
    assert "not offered on SMS" in _error(schema, doc)


def test_context_weights_validation(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["context_weights"] = [{"key": "page_type", "value": "lobby", "weight": 5}]
    msg = _error(schema, doc)
    assert "context_weights[0]" in msg and "'lobby'" in msg
    doc["actions"][0]["context_weights"] = [{"key": "income", "value": 1, "weight": 5}]
    assert "not a context feature" in _error(schema, doc)


def test_policy_budget_and_validity_blocks(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["contact_policy"] = {"max_impressions": 3, "window": "7d",
                                           "suppress_after_reject": "30d",
                                           "stop_after_accept": True, "cooldown": "12h"}
    doc["actions"][0]["budget"] = {"per_hour": 10, "per_day": 100}
    doc["actions"][0]["validity"] = {"start": "2026-01-01", "end": "2026-01-31"}
    a = parse_catalog(doc, schema).actions[0]
    assert a.contact_policy is not None and a.budget is not None
    assert a.contact_policy.window_s == 7 * 86400 and a.contact_policy.cooldown_s == 43200
    assert a.budget.per_day == 100
    assert a.validity.contains(a.validity.start_s)
    # A date-only end covers that whole day.
    assert a.validity.end_s - a.validity.start_s == 31 * 86400
    doc["actions"][0]["contact_policy"] = {"max_impressions": 3}
    assert "max_impressions and window go together" in _error(schema, doc)
    doc["actions"][0]["contact_policy"] = {"max_impressions": 0, "window": "1d"}
    assert "'contact_policy.max_impressions'" in _error(schema, doc)
    doc["actions"][0].pop("contact_policy")
    doc["actions"][0]["budget"] = {"per_week": 3}
    assert "'budget'" in _error(schema, doc)
    doc["actions"][0].pop("budget")
    doc["actions"][0]["validity"] = {"start": "2026-02-01", "end": "2026-01-01"}
    assert "start must be before end" in _error(schema, doc)
    doc["actions"][0]["validity"] = {"start": "soon"}
    assert "not an ISO date" in _error(schema, doc)


def test_fallback_with_validity_and_arbitration_errors(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][1]["validity"] = {"end": "2030-01-01"}
    assert "'info_fraud_awareness': field 'validity'" in _error(schema, doc)
    doc = _base()
    doc["arbitration"] = {"max_per_group": -1}
    assert "max_per_group" in _error(schema, doc)
    doc["arbitration"] = {"service_before_sales": {"assisted_channels": ["CALL_CENTRE"],
                                                   "complaint_feature": "segment"}}
    assert "complaint_feature" in _error(schema, doc)


def test_lever_and_value_types(schema: FeatureSchema) -> None:
    doc = _base()
    doc["actions"][0]["lever"] = -1
    assert "'lever'" in _error(schema, doc)
    doc = _base()
    doc["actions"][0]["value"] = [1]
    assert "'value'" in _error(schema, doc)


def test_invalid_yaml_file(tmp_path: Path, schema: FeatureSchema) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("actions: [\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad, schema)
