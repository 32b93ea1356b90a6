"""The catalog's chat section: parsing, validation errors and business hours."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from features.schema import FeatureSchema
from nba_service.engine.catalog import CatalogError, parse_catalog
from nba_service.engine.chat_config import BusinessHours, parse_chat

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(EXAMPLES / "features.yaml")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / "catalog.yaml").read_text())


ACTIONS = [("chat_invite_sales", "chat_invite", ("WEB",)),
           ("chat_invite_service", "chat_invite", ("WEB", "MOBILE_APP")),
           ("card_gold", "offer", ("WEB",))]
QUEUES = {"sales": {"kind": "sales", "action": "chat_invite_sales"}}


def test_demo_catalog_chat_section(doc: dict[str, Any], schema: FeatureSchema) -> None:
    cat = parse_catalog(doc, schema)
    chat = cat.chat
    assert chat is not None
    assert [q.name for q in chat.queues] == ["sales", "service"]
    assert chat.queue("sales").invites_per_agent == 1.5 and chat.queue("sales").callback
    assert chat.queue_of_action("chat_invite_service").kind == "service"  # type: ignore[union-attr]
    assert chat.queue_of_action("card_gold") is None
    assert chat.decline_cooldown_s == 600 and chat.invite_hold_s == 60
    assert chat.dwell_threshold("pricing") == 20 and chat.dwell_threshold("home") == 30
    assert chat.business_hours.timezone == "Europe/London"


def test_a_catalog_without_chat_has_none(doc: dict[str, Any], schema: FeatureSchema) -> None:
    d = copy.deepcopy(doc)
    del d["chat"]
    assert parse_catalog(d, schema).chat is None


@pytest.mark.parametrize(
    ("chat", "needle"),
    [
        ({"queues": {}}, "queues"),
        ({"queues": {"sales": {"kind": "presales", "action": "chat_invite_sales"}}}, "kind"),
        ({"queues": {"sales": {"kind": "sales", "action": "card_gold"}}}, "not chat_invite"),
        ({"queues": {"sales": {"kind": "sales", "action": "nope"}}}, "unknown action"),
        ({"queues": {"a": {"kind": "sales", "action": "chat_invite_sales"},
                     "b": {"kind": "service", "action": "chat_invite_sales"}}}, "already"),
        ({"queues": {"a b": {"kind": "sales", "action": "chat_invite_sales"}}}, "queue names"),
        ({"queues": {"sales": {"kind": "sales", "action": "chat_invite_sales",
                               "invites_per_agent": 0}}}, "invites_per_agent"),
        ({"queues": QUEUES, "channel": "CHAT"}, "not offered on channel CHAT"),
        ({"queues": QUEUES, "max_invites_per_session": -1}, "max_invites_per_session"),
        ({"queues": QUEUES, "decline_cooldown": "soon"}, "decline_cooldown"),
        ({"queues": QUEUES, "invite_hold": 0}, "invite_hold"),
        ({"queues": QUEUES, "session_ttl": "10s", "invite_hold": "60s"}, "session_ttl"),
        ({"queues": QUEUES, "min_dwell": {"lobby": "5s"}}, "min_dwell.lobby"),
        ({"queues": QUEUES, "min_score": "high"}, "min_score"),
        ({"queues": QUEUES, "surprise": 1}, "surprise"),
        ({"queues": QUEUES, "business_hours": {"timezone": "Mars/Olympus",
                                                "hours": {"mon": "09:00-17:00"}}}, "time zone"),
        ({"queues": QUEUES, "business_hours": {"hours": {"funday": "09:00-17:00"}}}, "funday"),
        ({"queues": QUEUES, "business_hours": {"hours": {"mon": "17:00-09:00"}}}, "end"),
        ({"queues": QUEUES, "business_hours": {"hours": {"mon": "9-17"}}}, "HH:MM"),
        ({"queues": QUEUES, "session_features": {"favourite_colour": "x"}}, "favourite_colour"),
    ],
)
def test_bad_chat_sections_fail_with_the_field(
    schema: FeatureSchema, chat: dict[str, Any], needle: str
) -> None:
    with pytest.raises(CatalogError) as err:
        parse_chat(chat, ACTIONS, schema)
    assert needle in str(err.value)
    assert str(err.value).startswith("chat")


def test_dwell_thresholds_and_session_features(schema: FeatureSchema) -> None:
    chat = parse_chat({"queues": QUEUES, "min_dwell": "12s"}, ACTIONS, schema)
    assert chat is not None
    assert chat.dwell_threshold("support") == 12 and chat.dwell_threshold("") == 12
    assert chat.session_features["dwell_time_s"] == "session_dwell_s"
    chat = parse_chat({"queues": QUEUES, "session_features": {"cart_value": "not_in_schema"}},
                      ACTIONS, schema)
    assert chat is not None and "cart_value" not in chat.session_features


def _at(day: int, hour: int, minute: int = 0, tz: str = "Europe/London") -> float:
    # March 2026: the 9th is a Monday; British Summer Time starts on the 29th.
    return datetime(2026, 3, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


def test_business_hours(schema: FeatureSchema) -> None:
    chat = parse_chat({"queues": QUEUES, "business_hours": {
        "timezone": "Europe/London",
        "hours": {"mon-fri": "08:00-12:00, 13:00-20:00", "sat": "09:00-14:00",
                  "sun": "closed"},
    }}, ACTIONS, schema)
    assert chat is not None
    bh = chat.business_hours
    assert bh.is_open(_at(9, 8, 0)) and bh.is_open(_at(9, 19, 59))
    assert not bh.is_open(_at(9, 7, 59)) and not bh.is_open(_at(9, 20, 0))
    assert not bh.is_open(_at(9, 12, 30))  # lunch
    assert bh.is_open(_at(14, 10)) and not bh.is_open(_at(14, 15))  # Saturday
    assert not bh.is_open(_at(15, 12))  # Sunday
    # Local time, across the DST change: 08:30 London is 07:30 UTC in summer.
    assert bh.is_open(_at(30, 7, 30, tz="UTC"))
    assert not bh.is_open(_at(27, 7, 30, tz="UTC"))  # 07:30 GMT, before opening


def test_day_ranges_wrap_and_missing_days_are_closed(schema: FeatureSchema) -> None:
    chat = parse_chat({"queues": QUEUES, "business_hours": {
        "timezone": "UTC", "hours": {"fri-mon": "00:00-24:00"}}}, ACTIONS, schema)
    assert chat is not None
    bh = chat.business_hours
    opened = [bh.is_open(_at(d, 12, tz="UTC")) for d in range(9, 16)]  # Mon..Sun
    assert opened == [True, False, False, False, True, True, True]
    assert BusinessHours().is_open(0.0)  # no business_hours: always open
