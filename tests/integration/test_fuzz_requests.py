"""Property-based fuzzing of every request field (and of raw bytes): no input may crash the
server or produce INTERNAL / UNKNOWN; bad input gets a precise client-error code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from tests.threaded import ThreadedServer

pytestmark = pytest.mark.integration

ALLOWED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.fixture(scope="module")
def target(server_store: EmbeddedRedis, model_artifact: Path) -> Iterator[str]:
    s = ThreadedServer(Settings(port=0, redis_url=server_store.url, model_path=model_artifact,
                                decision_log=False)).start()
    yield s.target
    s.stop()


@pytest.fixture(scope="module")
def channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as ch:
        yield ch


texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "c1", "{c:1}", "a\x00b", "x\ny", "é" * 300, "1" * 257, "WEB"]),
)
values = st.builds(
    pb.Value,
    string_value=texts,
) | st.builds(pb.Value, number_value=st.floats(allow_nan=True, allow_infinity=True)) | st.builds(
    pb.Value, bool_value=st.booleans()) | st.builds(
    pb.Value, int_value=st.integers(-(2**63), 2**63 - 1)) | st.just(pb.Value())
enum_ints = st.integers(-5, 20)
contexts = st.dictionaries(texts, values, max_size=70)

decide_requests = st.builds(
    pb.DecideRequest, customer_id=texts, channel=enum_ints, placement=texts, context=contexts,
    limit=st.integers(0, 2**32 - 1), request_id=texts, explain=st.booleans(),
)
outcome_requests = st.builds(
    pb.RecordOutcomeRequest, decision_id=texts, action_id=texts, customer_id=texts,
    outcome=enum_ints, event_id=texts,
    value=st.floats(allow_nan=True, allow_infinity=True), channel=enum_ints,
)
events = st.builds(pb.Event, feature=texts, value=values, op=enum_ints)
ingest_requests = st.builds(
    pb.IngestEventsRequest, customer_id=texts, events=st.lists(events, max_size=300),
)


def code_of(call: object, request: object) -> grpc.StatusCode:
    try:
        call(request, timeout=10)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return, attr-defined]
    return grpc.StatusCode.OK


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(req=decide_requests)
def test_decide_fields(channel: grpc.Channel, req: pb.DecideRequest) -> None:
    code = code_of(decisioning_pb2_grpc.DecisioningStub(channel).Decide, req)
    assert code in ALLOWED, (code, req)


@FUZZ
@given(req=outcome_requests)
def test_record_outcome_fields(channel: grpc.Channel, req: pb.RecordOutcomeRequest) -> None:
    code = code_of(decisioning_pb2_grpc.DecisioningStub(channel).RecordOutcome, req)
    assert code in ALLOWED, (code, req)


@FUZZ
@given(req=ingest_requests)
def test_ingest_fields(channel: grpc.Channel, req: pb.IngestEventsRequest) -> None:
    code = code_of(decisioning_pb2_grpc.DecisioningStub(channel).IngestEvents, req)
    assert code in ALLOWED, (code, req)


@FUZZ
@given(
    method=st.sampled_from(["Decide", "RecordOutcome", "IngestEvents"]),
    payload=st.binary(max_size=512),
)
def test_raw_bytes(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call = channel.unary_unary(
        f"/nba.v1.Decisioning/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    code = code_of(call, payload)
    assert code in ALLOWED, (code, payload)


def test_server_still_healthy_after_fuzzing(channel: grpc.Channel) -> None:
    resp = decisioning_pb2_grpc.DecisioningStub(channel).Decide(
        pb.DecideRequest(customer_id="after-fuzz", channel=pb.WEB), timeout=10
    )
    assert resp.decision_id
