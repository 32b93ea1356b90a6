"""Property-based fuzzing of every request field (and of raw bytes) of every client-facing RPC,
over gRPC (unary and the Decide stream) and over the HTTP/JSON gateway: no input may crash the
server or produce INTERNAL / UNKNOWN (HTTP 5xx); bad input gets a precise client-error code."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.http.gateway import HTTP_STATUS
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from tests.threaded import ThreadedServer

pytestmark = pytest.mark.integration

ALLOWED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


HTTP_ALLOWED = {HTTP_STATUS[c] for c in ALLOWED} | {413}  # 413: body over the size limit


@pytest.fixture(scope="module")
def server(server_store: EmbeddedRedis, model_artifact: Path) -> Iterator[ThreadedServer]:
    s = ThreadedServer(Settings(port=0, http_port=0, redis_url=server_store.url,
                                model_path=model_artifact, decision_log=False)).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def target(server: ThreadedServer) -> str:
    return server.target


@pytest.fixture(scope="module")
def http_url(server: ThreadedServer) -> str:
    assert server.server is not None and server.server.http is not None
    return server.server.http.url


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
small_floats = st.floats(allow_nan=True, allow_infinity=True)
chat_requests = st.builds(
    pb.ChatTriggerRequest, session_id=texts, customer_id=texts, page_type=texts,
    dwell_time_s=small_floats, pages_in_session=st.integers(0, 2**32 - 1),
    cart_value=small_floats, errors_seen=st.integers(0, 2**32 - 1),
    returning_visitor=st.booleans(), context=contexts, request_id=texts,
)
capacity_requests = st.builds(
    pb.AgentCapacityRequest, queue=texts, agents_available=st.integers(0, 2**32 - 1),
    agents_busy=st.integers(0, 2**32 - 1),
)
inspect_requests = st.builds(
    pb.InspectRequest, customer_id=texts, channel=enum_ints, placement=texts, context=contexts,
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


# Each unary RPC with the strategy of its request message (the raw-bytes test uses the same).
UNARY_FIELDS = {
    "/nba.v1.Decisioning/Decide": decide_requests,
    "/nba.v1.Decisioning/RecordOutcome": outcome_requests,
    "/nba.v1.Decisioning/IngestEvents": ingest_requests,
    "/nba.v1.Decisioning/EvaluateChatTrigger": chat_requests,
    "/nba.v1.Decisioning/ReportAgentCapacity": capacity_requests,
    "/nba.v1.Admin/Inspect": inspect_requests,
}


@pytest.mark.parametrize("method", sorted(UNARY_FIELDS))
@FUZZ
@given(data=st.data())
def test_unary_fields(channel: grpc.Channel, method: str, data: st.DataObject) -> None:
    req = data.draw(UNARY_FIELDS[method])
    call = channel.unary_unary(method, request_serializer=type(req).SerializeToString,
                               response_deserializer=lambda b: b)
    code = code_of(call, req)
    assert code in ALLOWED, (code, req)


@FUZZ
@given(reqs=st.lists(decide_requests, min_size=1, max_size=5))
def test_decide_stream_fields(channel: grpc.Channel, reqs: list[pb.DecideRequest]) -> None:
    """Every message of a stream is answered or the stream ends with a client-error code."""
    answered = 0
    try:
        for _ in decisioning_pb2_grpc.DecisioningStub(channel).DecideStream(
                iter(reqs), timeout=10):
            answered += 1
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
    assert code in ALLOWED, (code, reqs)
    if code is grpc.StatusCode.OK:
        assert answered == len(reqs)




@FUZZ
@given(method=st.sampled_from(sorted(UNARY_FIELDS)), payload=st.binary(max_size=512))
def test_raw_bytes(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call = channel.unary_unary(
        method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    code = code_of(call, payload)
    assert code in ALLOWED, (code, payload)


HTTP_ROUTES = ["/v1/decide", "/v1/outcome", "/v1/events", "/v1/chat-trigger",
               "/v1/agent-capacity", "/v1/inspect"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | texts,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
    max_leaves=20,
)
# Bodies near the real messages (right field names, wrong or odd values), and anything at all.
field_names = st.sampled_from([
    "customerId", "customer_id", "channel", "placement", "context", "limit", "requestId",
    "explain", "decisionId", "actionId", "outcome", "eventId", "value", "timestamp", "events",
    "sessionId", "pageType", "dwellTimeS", "pagesInSession", "cartValue", "queue",
    "agentsAvailable", "agentsBusy",
])
json_bodies = st.dictionaries(field_names, json_values, max_size=8) | json_values


def http_post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@FUZZ
@given(route=st.sampled_from(HTTP_ROUTES), body=json_bodies)
@example(route="/v1/decide", body=None)  # `null` once answered 500
@example(route="/v1/outcome", body=[1, 2])
def test_http_json_bodies(http_url: str, route: str, body: object) -> None:
    status, answer = http_post(http_url + route, json.dumps(body).encode())
    assert status in HTTP_ALLOWED, (status, answer, body)
    if status != 200:  # every refusal says what was wrong, in the canonical error shape
        assert answer["error"]["message"], answer


@FUZZ
@given(route=st.sampled_from(HTTP_ROUTES), payload=st.binary(max_size=512))
def test_http_raw_bytes(http_url: str, route: str, payload: bytes) -> None:
    status, answer = http_post(http_url + route, payload)
    assert status in HTTP_ALLOWED, (status, answer, payload)


def test_server_still_healthy_after_fuzzing(channel: grpc.Channel) -> None:
    resp = decisioning_pb2_grpc.DecisioningStub(channel).Decide(
        pb.DecideRequest(customer_id="after-fuzz", channel=pb.WEB), timeout=10
    )
    assert resp.decision_id
