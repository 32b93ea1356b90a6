"""End to end over a real channel: real gRPC server, real valkey-server, real model and catalog."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from features.encoding import RowEncoder, encode_batch_values, encode_realtime_values
from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.engine.catalog import Catalog
from nba_service.runtime import Runtime
from nba_service.scoring.artifact import load_artifact
from nba_service.server import NbaServer
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.keys import history_key, realtime_key

from .conftest import server_settings

pytestmark = pytest.mark.integration


async def test_health_serving_once_model_and_catalog_loaded(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "nba.v1.Decisioning"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_not_serving_without_a_model(server_store: EmbeddedRedis) -> None:
    settings = server_settings(server_store, model=None)
    server = NbaServer(settings, Runtime(settings))
    address = await server.start()
    try:
        async with grpc.aio.insecure_channel(address.target) as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="nba.v1.Decisioning"), timeout=5
            )
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(grace=0.1)


async def test_reflection_lists_the_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: list[str] = []
    async for resp in stub.ServerReflectionInfo(requests(), timeout=5):
        names.extend(s.name for s in resp.list_services_response.service)
    assert "nba.v1.Decisioning" in names
    assert "grpc.health.v1.Health" in names


async def test_decide_ranks_with_the_model_propensities(
    stub: decisioning_pb2_grpc.DecisioningStub,
    demo_customers: list[dict[str, object]],
    demo_schema: FeatureSchema,
    demo_catalog: Catalog,
    model_artifact: Path,
) -> None:
    customer = demo_customers[0]
    ctx = {"page_type": "product", "hour_of_day": 14}
    resp = await stub.Decide(build_request(str(customer["customer_id"]), "WEB", "hero", ctx, 5),
                             timeout=5)
    model = load_artifact(model_artifact, demo_schema)
    assert resp.model_version == model.version
    assert resp.catalog_version == demo_catalog.version
    assert len(resp.decision_id) >= 16
    assert resp.timing.total_us > 0
    assert not resp.degraded, resp.degraded_reasons
    recs = list(resp.recommendations)
    assert 1 <= len(recs) <= 5
    assert [r.rank for r in recs] == list(range(1, len(recs) + 1))
    # The served propensities are the model's scores of exactly this customer's row: recompute
    # them independently from the raw customer record through the shared encoder.
    encoder = RowEncoder(demo_schema, [a.attributes() for a in demo_catalog.actions])
    row = encoder.customer_row(
        encode_batch_values(demo_schema, customer),
        encode_realtime_values(demo_schema, {}),
        {**ctx, "channel": "WEB"},
    )
    idx = np.array([demo_catalog.index_of(r.action_id) for r in recs])
    expected = model.scorer.predict(encoder.encode(row, idx))
    np.testing.assert_allclose([r.propensity for r in recs], expected, rtol=0, atol=1e-9)
    for r in recs:
        assert r.priority == pytest.approx(r.propensity * r.context_weight * r.value * r.lever)
        assert "WEB" in demo_catalog.actions[demo_catalog.index_of(r.action_id)].channels
        assert r.treatment.title
        assert r.reason_codes
        assert r.selection_probability == 1.0
    non_mandatory = [r.priority for r in recs if "MANDATORY" not in r.reason_codes]
    assert non_mandatory == sorted(non_mandatory, reverse=True)


async def test_unknown_customer_gets_a_flagged_cold_start_answer(
    stub: decisioning_pb2_grpc.DecisioningStub,
) -> None:
    resp = await stub.Decide(build_request("never-seen-42", "MOBILE_APP"), timeout=5)
    assert resp.degraded
    assert "cold_start:unknown_customer" in resp.degraded_reasons
    assert resp.model_version


async def test_missing_and_stale_features_are_imputed_and_reported(
    stub: decisioning_pb2_grpc.DecisioningStub, nba_server: NbaServer,
    server_store: EmbeddedRedis, demo_schema: FeatureSchema,
) -> None:
    import time

    from features.packing import pack
    from features.schema import Source
    from nba_service.store.keys import features_key

    specs = demo_schema.of(Source.BATCH)
    names = [f.name for f in specs]
    vec = np.array([f.default_encoded for f in specs], dtype=np.float32)
    vec[names.index("age")] = 44
    vec[names.index("region")] = np.nan  # a gap in this customer's record
    # Written 8 days ago: `balance` (max_age 7d) is stale, `age` (400d) is not.
    ts = time.time_ns() // 1_000_000 - 8 * 86_400_000
    cid = "gappy-customer-1"
    admin = redis.Redis.from_url(server_store.url)
    admin.set(features_key(cid), pack(demo_schema, vec, ts))
    registry = nba_server.runtime.safeguards.metrics.registry

    def imputed(feature: str, kind: str) -> float:
        labels = {"feature": feature, "kind": kind}
        return registry.get_sample_value("nba_feature_problems_total", labels) or 0.0

    before = imputed("region", "missing"), imputed("balance", "stale")
    try:
        resp = await stub.Decide(build_request(cid, "WEB"), timeout=5)
    finally:
        admin.delete(features_key(cid))
        admin.close()
    assert resp.degraded and resp.recommendations
    reasons = {r.split(":", 1)[0]: r.split(":", 1)[1] for r in resp.degraded_reasons}
    assert "balance" in reasons["stale_features"].split(",")
    assert "age" not in reasons["stale_features"].split(",")
    assert reasons["missing_features"].split(",") == ["region"]
    assert "cold_start" not in reasons
    assert (imputed("region", "missing"), imputed("balance", "stale")) == (
        before[0] + 1, before[1] + 1)


async def test_explain_lists_every_candidate_with_its_fate(
    stub: decisioning_pb2_grpc.DecisioningStub,
    demo_customers: list[dict[str, object]],
    demo_catalog: Catalog,
) -> None:
    cid = str(demo_customers[1]["customer_id"])
    resp = await stub.Decide(build_request(cid, "CALL_CENTRE", explain=True), timeout=5)
    on_channel = {a.id for a in demo_catalog.actions if "CALL_CENTRE" in a.channels}
    explained = {c.action_id: c for c in resp.explanation.candidates}
    assert set(explained) == on_channel
    served = {r.action_id for r in resp.recommendations}
    for aid, c in explained.items():
        assert (c.rank > 0) == (aid in served)
        if aid in served:
            assert c.removed_by == ""
    for r in resp.recommendations:
        contrib = {a.action_id: a for a in resp.explanation.contributions}[r.action_id]
        assert 0 < len(contrib.top) <= 5


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.DecideRequest(channel=pb.WEB), "customer_id"),
        (pb.DecideRequest(customer_id="c1"), "channel"),
        (pb.DecideRequest(customer_id="c1", channel=77), "channel"),
    ],
)
async def test_bad_requests_get_invalid_argument_naming_the_field(
    stub: decisioning_pb2_grpc.DecisioningStub, request_: pb.DecideRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Decide(request_, timeout=5)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith(field)


async def test_record_outcome_applies_once_per_event_id(
    stub: decisioning_pb2_grpc.DecisioningStub, server_store: EmbeddedRedis
) -> None:
    req = pb.RecordOutcomeRequest(
        customer_id="c-outcome", action_id="card_gold", outcome=pb.REJECT, event_id="ev-1",
        channel=pb.WEB,
    )
    first = await stub.RecordOutcome(req, timeout=5)
    again = await stub.RecordOutcome(req, timeout=5)
    assert (first.applied, again.applied) == (True, False)
    history = redis.Redis.from_url(server_store.url).hgetall(history_key("c-outcome"))
    assert history[b"card_gold|reject|n"] == b"1"


async def test_record_outcome_unknown_action_is_not_found_and_writes_nothing(
    stub: decisioning_pb2_grpc.DecisioningStub, server_store: EmbeddedRedis
) -> None:
    req = pb.RecordOutcomeRequest(
        customer_id="c-nf", action_id="no_such_action", outcome=pb.ACCEPT, event_id="ev-2"
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.RecordOutcome(req, timeout=5)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_action" in exc.value.details()
    client = redis.Redis.from_url(server_store.url)
    assert client.keys("nba:{c:c-nf}*") == []


async def test_ingest_events_update_realtime_features(
    stub: decisioning_pb2_grpc.DecisioningStub, server_store: EmbeddedRedis
) -> None:
    req = pb.IngestEventsRequest(customer_id="c-rt")
    req.events.add(feature="cart_value", value=pb.Value(number_value=40.0), op=pb.Event.ADD)
    req.events.add(feature="cart_value", value=pb.Value(number_value=2.5), op=pb.Event.ADD)
    resp = await stub.IngestEvents(req, timeout=5)
    assert resp.applied == 2
    client = redis.Redis.from_url(server_store.url)
    assert float(client.hget(realtime_key("c-rt"), "cart_value")) == 42.5
    assert client.ttl(realtime_key("c-rt")) > 0

    bad = pb.IngestEventsRequest(customer_id="c-rt")
    bad.events.add(feature="age", value=pb.Value(int_value=3))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.IngestEvents(bad, timeout=5)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "age" in exc.value.details()


async def test_nba_decide_cli_prints_a_decision_from_the_server(
    nba_server: NbaServer,
    demo_customers: list[dict[str, object]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from nba_service.cli import main

    assert nba_server.address is not None
    cid = str(demo_customers[2]["customer_id"])
    args = ["decide", cid, "--channel", "MOBILE_APP", "--context", "page_type=account",
            "--target", nba_server.address.target, "--explain"]
    rc = await asyncio.to_thread(main, args)
    out = capsys.readouterr().out
    assert rc == 0
    assert f"customer {cid} on MOBILE_APP" in out
    assert " 1  " in out and "candidates," in out

    rc = await asyncio.to_thread(main, ["decide", "", "--target", nba_server.address.target])
    assert rc == 1
    assert "INVALID_ARGUMENT: customer_id" in capsys.readouterr().err


async def test_admin_status_and_echo(
    channel: grpc.aio.Channel, model_artifact: Path, demo_schema: FeatureSchema,
    demo_catalog: Catalog,
) -> None:
    admin = decisioning_pb2_grpc.AdminStub(channel)
    status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert status.ready
    assert status.model_version == load_artifact(model_artifact, demo_schema).version
    assert status.catalog_version == demo_catalog.version
    echoed = await admin.Echo(pb.EchoRequest(payload=b"\x00floor\xff"), timeout=5)
    assert echoed.payload == b"\x00floor\xff"
