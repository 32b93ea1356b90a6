"""Pure parts of chat and the gateway: session gates, capacity arithmetic, display helpers."""

from __future__ import annotations

import math

import grpc
import pytest

from features.schema import FeatureSchema
from nba_service.chat import _session_gate
from nba_service.engine.chat_config import ChatConfig
from nba_service.http.gateway import HTTP_STATUS, error_response
from nba_service.inspector import contact_history, display
from nba_service.store.chat import QueueCapacity, SessionState
from tests.conftest import EXAMPLES

CFG = ChatConfig(max_invites_per_session=2, decline_cooldown_s=60)
NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("session", "gate"),
    [
        (SessionState(), ""),
        (SessionState(invites=2), "SESSION_INVITE_LIMIT"),
        (SessionState(invites=1, declined_ms=NOW - 59_000), "DECLINE_COOLDOWN"),
        (SessionState(invites=1, declined_ms=NOW - 61_000), ""),
        (SessionState(invites=1, pending="i1", pending_until_ms=NOW + 1), "INVITE_PENDING"),
        (SessionState(invites=1, pending="i1", pending_until_ms=NOW), ""),  # hold expired
    ],
)
def test_session_gates(session: SessionState, gate: str) -> None:
    assert _session_gate(session, CFG, NOW) == gate


def test_session_state_parse() -> None:
    raw = {b"invites": b"2", b"declined_ms": b"123", b"pending": b"abc",
           b"pending_until": b"456"}
    assert SessionState.parse(raw) == SessionState(2, 123, "abc", 456)
    assert SessionState.parse(None) == SessionState()


@pytest.mark.parametrize(
    ("cap", "ratio", "max_age", "free"),
    [
        (QueueCapacity(3, 1, NOW, holds=0, taken=0), 1.0, None, 3),
        (QueueCapacity(3, 1, NOW, holds=1, taken=0), 1.5, None, 3),  # floor(4.5) - 1
        (QueueCapacity(3, 1, NOW, holds=0, taken=2), 1.0, None, 1),
        (QueueCapacity(1, 1, NOW, holds=0, taken=3), 2.0, None, 0),  # never below 0 agents
        (QueueCapacity(2, 0, NOW, holds=4, taken=0), 1.0, None, -2),  # overbooked by races
        (QueueCapacity(None, None, None, holds=0, taken=0), 1.0, None, None),
        (QueueCapacity(3, 0, NOW - 301_000, holds=0, taken=0), 1.0, 300.0, None),  # stale
        (QueueCapacity(3, 0, NOW - 299_000, holds=0, taken=0), 1.0, 300.0, 3),
    ],
)
def test_free_capacity(cap: QueueCapacity, ratio: float, max_age: float | None,
                       free: int | None) -> None:
    assert cap.free(ratio, NOW, max_age) == free


def test_http_status_of_every_grpc_code() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT] == 400
    assert HTTP_STATUS[grpc.StatusCode.NOT_FOUND] == 404
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    resp = error_response(grpc.StatusCode.FAILED_PRECONDITION, "nope")
    assert resp.status == 400
    assert resp.text is not None and '"FAILED_PRECONDITION"' in resp.text


def test_display_and_history() -> None:
    schema = FeatureSchema.from_yaml(EXAMPLES / "features.yaml")
    assert display(schema.get("segment"), 2.0) == "gold"  # type: ignore[arg-type]
    assert display(schema.get("has_mortgage"), 1.0) == "true"  # type: ignore[arg-type]
    assert display(schema.get("age"), 41.0) == "41"  # type: ignore[arg-type]
    assert display(schema.get("clv"), math.nan) == ""  # type: ignore[arg-type]
    raw = {b"card_gold|impression|n": b"3", b"card_gold|impression|t": b"2000",
           b"card_gold|reject|n": b"1", b"card_gold|reject|t": b"3000",
           b"card_gold|reject|c": b"CALL_CENTRE",
           b"card_gold|value": b"12.5", b"#i|card_gold": b"1000,2000", b"bogus": b"x"}
    records = contact_history(raw)
    assert [(r.action_id, r.outcome, r.count, r.last_ms, r.channel) for r in records] == [
        ("card_gold", "REJECT", 1, 3000, "CALL_CENTRE"), ("card_gold", "IMPRESSION", 3, 2000, "")]
