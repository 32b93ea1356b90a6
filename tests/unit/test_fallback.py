"""Fallback sets: which actions a channel/placement serves when no decision can be computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from features.schema import FeatureSchema
from nba_service.engine.catalog import CHANNELS, CatalogError, load_catalog, parse_catalog
from nba_service.engine.fallback import channels_without_fallback, fallback_actions

SCHEMA = FeatureSchema.from_dict({"features": [{"name": "age", "dtype": "int"}]})
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T = {"default": {"title": "t", "text": "x"}}


def _fb(aid: str, channels: list[str], **kw: Any) -> dict[str, Any]:
    return {"id": aid, "type": "info", "group": "info", "channels": channels, "treatments": T,
            "fallback": True, **kw}


def _doc() -> dict[str, Any]:
    return {
        "channels": {"WEB": {"fallback": ["hero_fb", "any_fb", "other_fb"]},
                     "CHAT": {"fallback": ["widget_fb"]}},
        "actions": [
            _fb("hero_fb", ["WEB"], placements=["hero"]),
            _fb("any_fb", ["WEB"]),
            _fb("other_fb", ["WEB"]),
            _fb("widget_fb", ["CHAT"], placements=["chat_widget"]),
            {"id": "offer", "type": "offer", "group": "g", "channels": ["WEB"], "treatments": T,
             "eligibility": "age >= 18"},
        ],
    }


def test_fallbacks_follow_the_declared_order_placement_and_limit() -> None:
    cat = parse_catalog(_doc(), SCHEMA)
    ids = lambda idx: [cat.actions[i].id for i in idx]  # noqa: E731
    assert ids(fallback_actions(cat, "WEB", None, 5)) == ["hero_fb", "any_fb", "other_fb"]
    assert ids(fallback_actions(cat, "WEB", "hero", 2)) == ["hero_fb", "any_fb"]
    # A placement the hero fallback does not serve skips it.
    assert ids(fallback_actions(cat, "WEB", "sidebar", 5)) == ["any_fb", "other_fb"]
    # Never empty: when no fallback fits the placement, the channel's whole set is served.
    assert ids(fallback_actions(cat, "CHAT", "inline", 3)) == ["widget_fb"]
    assert fallback_actions(cat, "WEB", None, 0) == []


def test_channels_without_fallback_covers_every_api_channel() -> None:
    cat = parse_catalog(_doc(), SCHEMA)
    assert channels_without_fallback(cat) == [ch for ch in CHANNELS if ch not in ("WEB", "CHAT")]
    demo = load_catalog(EXAMPLES / "catalog.yaml", FeatureSchema.from_yaml(
        EXAMPLES / "features.yaml"))
    assert channels_without_fallback(demo) == []


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["actions"][1].update(eligibility="age > 1"), "cannot have rules"),
    (lambda d: d["actions"][1].update(fallback=False), "not marked 'fallback: true'"),
    (lambda d: d["channels"].update(WEB={"fallback": []}), "non-empty list"),
    (lambda d: d["channels"].pop("WEB"), "no fallback declared"),
])
def test_the_validator_rejects_unservable_fallbacks(change: Any, message: str) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(CatalogError, match=message):
        parse_catalog(doc, SCHEMA)
