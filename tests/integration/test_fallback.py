"""Fallback over a real server: store down, model missing, and health without a fallback set."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.demo import write_customers
from nba_service.engine.catalog import Catalog
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.decision_log import DECISIONS_STREAM
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.loader import load_file
from nba_service.store.log_format import decode_decision
from nba_service.types import DecisionRequest

from .conftest import EXAMPLES, server_settings

pytestmark = pytest.mark.integration


def _fallback_ids(catalog: Catalog, channel: str) -> list[str]:
    return [catalog.actions[i].id for i in catalog.channel_fallbacks[channel]]


async def _health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="nba.v1.Decisioning"), timeout=5)
    return int(resp.status)


async def test_store_down_serves_the_fallback_set_flagged_degraded(
    demo_schema: FeatureSchema, demo_catalog: Catalog, demo_customers: list[dict[str, object]],
    model_artifact: Path, tmp_path: Path,
) -> None:
    store = EmbeddedRedis().start()  # the server's own store, so stopping it harms no one else
    try:
        write_customers(tmp_path / "c.parquet", demo_customers, demo_schema)
        load_file(tmp_path / "c.parquet", redis.Redis.from_url(store.url), demo_schema,
                  progress=False)
        settings = server_settings(store, model_artifact)
        server = NbaServer(settings, Runtime(settings))
        address = await server.start()
        try:
            async with grpc.aio.insecure_channel(address.target) as ch:
                stub = decisioning_pb2_grpc.DecisioningStub(ch)
                cid = str(demo_customers[0]["customer_id"])
                before = await stub.Decide(build_request(cid, "CALL_CENTRE", limit=3), timeout=5)
                assert not any(r.startswith("fallback:") for r in before.degraded_reasons)
                store.stop()
                t0 = time.monotonic()
                resp = await stub.Decide(build_request(cid, "CALL_CENTRE", limit=3,
                                                       explain=True), timeout=5)
                assert time.monotonic() - t0 < 3
                assert resp.degraded
                assert resp.degraded_reasons[0] == "fallback:store_unavailable"
                assert [r.action_id for r in resp.recommendations] == \
                    _fallback_ids(demo_catalog, "CALL_CENTRE")[:3]
                for r in resp.recommendations:
                    assert r.reason_codes == ["FALLBACK"]
                    assert r.selection_probability == 1.0
                    assert r.treatment.title
                assert resp.catalog_version == demo_catalog.version
                assert [c.detail for c in resp.explanation.candidates] == \
                    ["served as fallback:store_unavailable"] * len(resp.recommendations)
                one = await stub.Decide(build_request(cid, "WEB", "hero", limit=1), timeout=5)
                assert [r.action_id for r in one.recommendations] == \
                    _fallback_ids(demo_catalog, "WEB")[:1]
        finally:
            await server.stop(grace=0.1)
    finally:
        store.stop()


class _CrashingScorer:
    """A model backend that fails on every call (the error path under test)."""

    version = "crashing"
    feature_names: list[str] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("model backend crashed")


async def test_model_unavailable_serves_the_fallback_set(
    nba_server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub,
    demo_catalog: Catalog, demo_customers: list[dict[str, object]],
) -> None:
    models = nba_server.runtime.models
    good = models.model
    assert good is not None
    cid = str(demo_customers[2]["customer_id"])
    # The scorer fails inside a request: the decision falls back instead of failing.
    models._model = dataclasses.replace(good, scorer=_CrashingScorer())  # type: ignore[arg-type]
    try:
        resp = await stub.Decide(build_request(cid, "WEB", limit=5), timeout=5)
    finally:
        models._model = good
    assert resp.degraded_reasons[0] == "fallback:model_unavailable"
    assert resp.model_version == good.version
    assert [r.action_id for r in resp.recommendations] == _fallback_ids(demo_catalog, "WEB")
    assert [r.rank for r in resp.recommendations] == list(range(1, len(resp.recommendations) + 1))
    # A fallback answer is a decision like any other: its outcomes are accepted ...
    served = resp.recommendations[0].action_id
    for i, outcome in enumerate((pb.IMPRESSION, pb.ACCEPT)):
        ack = await stub.RecordOutcome(pb.RecordOutcomeRequest(
            decision_id=resp.decision_id, action_id=served, customer_id=cid, outcome=outcome,
            event_id=f"fb-{resp.decision_id}-{i}", channel=pb.WEB), timeout=5)
        assert ack.applied
    # ... and it is in the decision log with its cause and probability 1 per served action.
    log = nba_server.runtime.decision_log
    assert log is not None
    await log.flush()
    client = redis.Redis.from_url(nba_server.runtime.redis_url)
    try:
        entries = [decode_decision(f[b"d"]) for _, f in client.xrange(DECISIONS_STREAM)]
    finally:
        client.close()
    entry = next(e for e in entries if e.decision_id == resp.decision_id)
    assert entry.degraded[0] == "fallback:model_unavailable"
    assert entry.served_ids == [r.action_id for r in resp.recommendations]
    assert entry.served_probability == [1.0] * len(resp.recommendations)
    again = await stub.Decide(build_request(cid, "WEB", limit=5), timeout=5)
    assert not any(r.startswith("fallback:") for r in again.degraded_reasons)


async def test_no_model_loaded_serves_the_fallback_set(
    server_store: EmbeddedRedis, demo_catalog: Catalog, demo_customers: list[dict[str, object]],
) -> None:
    settings = server_settings(server_store, model=None)
    server = NbaServer(settings, Runtime(settings))
    address = await server.start()
    try:
        assert await _health(address.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        # Health keeps traffic away; a decision that still arrives gets the fallback set.
        d = await server.runtime.decide(DecisionRequest(
            customer_id=str(demo_customers[2]["customer_id"]), channel="MOBILE_APP", limit=5))
        assert d.degraded_reasons[0] == "fallback:model_unavailable"
        assert d.model_version == ""
        assert [a.action_id for a in d.actions] == _fallback_ids(demo_catalog, "MOBILE_APP")
    finally:
        await server.stop(grace=0.1)


async def test_health_is_not_serving_while_a_channel_lacks_a_fallback(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path: Path,
) -> None:
    doc = yaml.safe_load((EXAMPLES / "catalog.yaml").read_text(encoding="utf-8"))
    # Drop ATM everywhere: the catalog is valid, but an ATM request could not fall back.
    del doc["channels"]["ATM"]
    doc["actions"] = [a for a in doc["actions"] if a["channels"] != ["ATM"]]
    for a in doc["actions"]:
        a["channels"] = [c for c in a["channels"] if c != "ATM"]
        if isinstance(a.get("treatments"), dict):
            a["treatments"].pop("ATM", None)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    settings = Settings(host="127.0.0.1", port=0, redis_url=server_store.url,
                        model_path=model_artifact, catalog=path, catalog_watch_interval_s=0)
    server = NbaServer(settings, Runtime(settings))
    address = await server.start()
    try:
        assert await _health(address.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with grpc.aio.insecure_channel(address.target) as ch:
            admin = decisioning_pb2_grpc.AdminStub(ch)
            status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert not status.ready
            assert status.details["channels_without_fallback"] == "ATM"
            # Restoring the full catalog makes the service ready, without a restart.
            path.write_bytes((EXAMPLES / "catalog.yaml").read_bytes())
            reload = await admin.ReloadCatalog(pb.ReloadCatalogRequest(), timeout=30)
            assert reload.changed and not reload.error
            status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert status.ready and "channels_without_fallback" not in status.details
        assert await _health(address.target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(grace=0.1)
