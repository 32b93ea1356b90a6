"""Request validation and conversion: limits and field names, before any I/O."""

from __future__ import annotations

import math

import pytest

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service.client import build_request, parse_context
from nba_service.errors import InvalidArgument
from nba_service.servicer import Validator
from nba_service.settings import Settings


@pytest.fixture
def v() -> Validator:
    return Validator(Settings(max_context_entries=4, max_string_len=16, max_limit=5))


def test_decide_request_converts_typed_context(v: Validator) -> None:
    req = build_request(
        "c1",
        "web",
        "hero",
        {"page_type": "product", "hour_of_day": 14, "returning": True, "score": 0.5},
        limit=2,
    )
    out = v.decide(req)
    assert out.customer_id == "c1"
    assert out.channel == "WEB"
    assert out.limit == 2
    assert out.context == {
        "page_type": "product",
        "hour_of_day": 14,
        "returning": True,
        "score": 0.5,
    }


def test_limit_zero_means_server_default(v: Validator) -> None:
    assert v.decide(build_request("c1", "WEB")).limit == Settings().default_limit


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: setattr(r, "customer_id", ""), "customer_id"),
        (lambda r: setattr(r, "customer_id", "x" * 17), "customer_id"),
        (lambda r: setattr(r, "customer_id", "a{b}"), "customer_id"),
        (lambda r: setattr(r, "channel", 0), "channel"),
        (lambda r: setattr(r, "channel", 99), "channel"),
        (lambda r: setattr(r, "limit", 6), "limit"),
        (lambda r: setattr(r, "placement", "p" * 17), "placement"),
        (
            lambda r: [r.context[f"k{i}"].CopyFrom(pb.Value(int_value=i)) for i in range(5)],
            "context",
        ),
        (lambda r: r.context["k"].CopyFrom(pb.Value()), "context['k']"),
        (lambda r: r.context["k"].CopyFrom(pb.Value(number_value=math.inf)), "context['k']"),
        (lambda r: r.context["k"].CopyFrom(pb.Value(string_value="s" * 17)), "context['k']"),
    ],
)
def test_bad_decide_requests_name_the_field(v: Validator, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    req = build_request("c1", "WEB")
    mutate(req)
    with pytest.raises(InvalidArgument) as exc:
        v.decide(req)
    assert exc.value.field == field
    assert str(exc.value).startswith(field)


def test_outcome_requires_event_id_and_known_outcome(v: Validator) -> None:
    ok = pb.RecordOutcomeRequest(customer_id="c1", action_id="a", outcome=pb.ACCEPT, event_id="e1")
    assert v.outcome(ok).outcome == "accept"
    with pytest.raises(InvalidArgument, match="^event_id"):
        v.outcome(pb.RecordOutcomeRequest(customer_id="c1", action_id="a", outcome=pb.ACCEPT))
    with pytest.raises(InvalidArgument, match="^outcome"):
        v.outcome(pb.RecordOutcomeRequest(customer_id="c1", action_id="a", event_id="e"))
    with pytest.raises(InvalidArgument, match="^value"):
        v.outcome(
            pb.RecordOutcomeRequest(
                customer_id="c1", action_id="a", event_id="e", outcome=pb.CONVERSION, value=math.nan
            )
        )


def test_events_are_bounded_and_typed(v: Validator) -> None:
    req = pb.IngestEventsRequest(customer_id="c1")
    with pytest.raises(InvalidArgument, match="^events"):
        v.events(req)
    req.events.add(feature="cart_value", value=pb.Value(number_value=12.5), op=pb.Event.ADD)
    cid, events, ts = v.events(req)
    assert (cid, events, ts) == ("c1", [("cart_value", 12.5, "add")], None)


def test_parse_context_types_values() -> None:
    assert parse_context(["a=1", "b=2.5", "c=true", "d=gold"]) == {
        "a": 1,
        "b": 2.5,
        "c": True,
        "d": "gold",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_context(["novalue"])
