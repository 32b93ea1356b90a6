"""The decision log over a real server and store: what is logged, when, and how it is bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from features.encoding import RowEncoder, encode_batch_values, encode_realtime_values
from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.engine.catalog import Catalog
from nba_service.engine.reasons import Stage
from nba_service.scoring.artifact import load_artifact
from nba_service.server import NbaServer
from nba_service.store.decision_log import (
    DECISIONS_STREAM,
    OUTCOMES_STREAM,
    DecisionLogWriter,
    decision_record_key,
)
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.log_format import decode_decision, decode_outcome
from nba_service.types import Decision

pytestmark = pytest.mark.integration


def _writer(server: NbaServer) -> DecisionLogWriter:
    log = server.runtime.decision_log
    assert log is not None
    return log


async def _entry_of(client: aioredis.Redis, decision_id: str, schema: FeatureSchema):  # type: ignore[no-untyped-def]
    for _, fields in reversed(await client.xrange(DECISIONS_STREAM)):
        entry = decode_decision(fields[b"d"], len(schema.features))
        if entry.decision_id == decision_id:
            return entry
    raise AssertionError(f"decision {decision_id} not in the log")


async def test_every_decision_is_logged_with_point_in_time_features(
    nba_server: NbaServer,
    stub: decisioning_pb2_grpc.DecisioningStub,
    server_store: EmbeddedRedis,
    demo_customers: list[dict[str, object]],
    demo_schema: FeatureSchema,
    demo_catalog: Catalog,
    model_artifact: Path,
) -> None:
    customer = demo_customers[2]
    cid = str(customer["customer_id"])
    ctx = {"page_type": "pricing", "hour_of_day": 9}
    req = build_request(cid, "WEB", "hero", ctx, 4)
    req.request_id = "rq-7"
    resp = await stub.Decide(req, timeout=5)
    await _writer(nba_server).flush()
    client = aioredis.Redis.from_url(server_store.url)
    try:
        e = await _entry_of(client, resp.decision_id, demo_schema)
        record = await client.hgetall(decision_record_key(cid, resp.decision_id))
        ttl_ms = await client.pttl(decision_record_key(cid, resp.decision_id))
    finally:
        await client.aclose()

    assert (e.customer, e.channel, e.placement, e.request_id) == (cid, "WEB", "hero", "rq-7")
    assert (e.model_version, e.catalog_version) == (resp.model_version, resp.catalog_version)
    assert e.schema_hash == demo_schema.hash
    assert abs(e.ts_ms - time.time() * 1000) < 60_000
    served = [r.action_id for r in resp.recommendations]
    assert e.served_ids == served
    assert e.served_probability == [r.selection_probability for r in resp.recommendations]
    # Every WEB/hero candidate is there with its fate; served ones carry stage 0.
    offered = [a.id for a in demo_catalog.actions if a.offered_on("WEB", "hero")]
    assert e.candidate_ids == offered
    for aid in served:
        assert e.candidate_stage[e.candidate_ids.index(aid)] == Stage.SERVED
    assert int((e.candidate_stage == Stage.SERVED).sum()) == len(served)
    # P, C, V, L, priority of the served actions are the response's.
    for k, r in enumerate(resp.recommendations):
        np.testing.assert_allclose(
            e.served_scores[k], [r.propensity, r.context_weight, r.value, r.lever, r.priority])
        np.testing.assert_allclose(e.candidate_scores[e.candidate_ids.index(r.action_id)],
                                   e.served_scores[k], rtol=1e-6)  # float32 for candidates

    # Point in time: the logged customer row is exactly what an independent encoding of the
    # stored record gives, and the logged served rows score to exactly the served propensities.
    encoder = RowEncoder(demo_schema, [a.attributes() for a in demo_catalog.actions])
    row = encoder.customer_row(encode_batch_values(demo_schema, customer),
                               encode_realtime_values(demo_schema, {}), {**ctx, "channel": "WEB"})
    assert e.customer_row.tobytes() == row.tobytes()
    idx = np.array([demo_catalog.index_of(a) for a in served])
    assert e.served_rows.tobytes() == encoder.encode(row, idx).tobytes()
    model = load_artifact(model_artifact, demo_schema)
    np.testing.assert_array_equal(model.scorer.predict(np.ascontiguousarray(e.served_rows)),
                                  [r.propensity for r in resp.recommendations])

    # The per-decision record RecordOutcome checks: served action -> selection probability,
    # expiring with the longest response window among the served actions.
    assert {k.decode(): float(v) for k, v in record.items()} == {
        r.action_id: r.selection_probability for r in resp.recommendations}
    window_ms = max(demo_catalog.actions[i].outcomes.response_window_s for i in idx) * 1000
    assert window_ms - 60_000 < ttl_ms <= window_ms


async def test_outcomes_are_appended_once_to_the_outcome_stream(
    nba_server: NbaServer,
    stub: decisioning_pb2_grpc.DecisioningStub,
    server_store: EmbeddedRedis,
    demo_customers: list[dict[str, object]],
) -> None:
    cid = str(demo_customers[3]["customer_id"])
    resp = await stub.Decide(build_request(cid, "MOBILE_APP"), timeout=5)
    aid = resp.recommendations[0].action_id
    req = pb.RecordOutcomeRequest(
        customer_id=cid, decision_id=resp.decision_id, action_id=aid, outcome=pb.CONVERSION,
        event_id=f"ev-{resp.decision_id}", value=12.5, channel=pb.MOBILE_APP,
    )
    # Straight after the response: the outcome must find the decision's record.
    assert (await stub.RecordOutcome(req, timeout=5)).applied
    assert not (await stub.RecordOutcome(req, timeout=5)).applied
    client = aioredis.Redis.from_url(server_store.url)
    try:
        entries = [decode_outcome(f) for _, f in await client.xrange(OUTCOMES_STREAM)]
    finally:
        await client.aclose()
    mine = [o for o in entries if o.decision_id == resp.decision_id]
    assert len(mine) == 1
    o = mine[0]
    assert (o.action_id, o.customer, o.outcome, o.value, o.channel) == (
        aid, cid, "conversion", 12.5, "MOBILE_APP")
    assert o.event_id == f"ev-{resp.decision_id}"


async def _decision(server: NbaServer, cid: str) -> Decision:
    from nba_service.types import DecisionRequest

    decider = server.runtime._decider
    assert decider is not None
    return await decider.decide(DecisionRequest(customer_id=cid, channel="WEB", limit=3))


async def test_a_queued_decision_is_written_before_its_outcome_is_checked(
    nba_server: NbaServer, server_store: EmbeddedRedis, demo_customers: list[dict[str, object]]
) -> None:
    cid = str(demo_customers[4]["customer_id"])
    client = aioredis.Redis.from_url(server_store.url)
    writer = DecisionLogWriter(client, "h")  # not started: the entry stays queued
    try:
        d = await _decision(nba_server, cid)
        assert d.actions
        assert writer.submit(d)
        key = decision_record_key(cid, d.decision_id)
        assert not await client.exists(key)
        waiter = asyncio.create_task(writer.ensure_recorded(cid, d.decision_id))
        await asyncio.sleep(0)
        assert not waiter.done()  # it waits for the writer, it does not give up
        writer.start()
        await asyncio.wait_for(waiter, 5)
        assert await client.exists(key)
        assert writer.counters.waits_for_pending == 1
    finally:
        await writer.stop()
        await client.aclose()


async def test_a_young_decision_from_another_process_is_waited_for(
    nba_server: NbaServer, server_store: EmbeddedRedis, demo_customers: list[dict[str, object]]
) -> None:
    cid = str(demo_customers[5]["customer_id"])
    client = aioredis.Redis.from_url(server_store.url)
    producer = DecisionLogWriter(client, "h")  # the process that answered the Decide
    checker = DecisionLogWriter(client, "h", settle_ms=10_000)  # the one that gets the outcome
    try:
        d = await _decision(nba_server, cid)
        producer.submit(d)
        waiter = asyncio.create_task(checker.ensure_recorded(cid, d.decision_id))
        await asyncio.sleep(0.02)
        assert not waiter.done()
        producer.start()
        await asyncio.wait_for(waiter, 5)
        assert await client.exists(decision_record_key(cid, d.decision_id))
        # An unknown id older than the settle time is not waited for at all.
        t0 = time.perf_counter()
        await checker.ensure_recorded(cid, "000000000001" + "ab" * 10)
        assert time.perf_counter() - t0 < 0.5
    finally:
        await producer.stop()
        await client.aclose()


async def test_a_full_queue_drops_and_counts_and_the_stream_is_trimmed(
    nba_server: NbaServer, server_store: EmbeddedRedis, demo_customers: list[dict[str, object]]
) -> None:
    client = aioredis.Redis.from_url(server_store.url)
    writer = DecisionLogWriter(client, "h", queue_size=2, batch_size=2, maxlen=1000)
    try:
        decisions = [await _decision(nba_server, str(demo_customers[i]["customer_id"]))
                     for i in range(3)]
        assert [writer.submit(d) for d in decisions] == [True, True, False]
        assert writer.counters.dropped_queue_full == 1
        writer.start()
        await writer.flush()
        assert writer.counters.written == 2
        assert not await client.exists(decision_record_key(
            str(demo_customers[2]["customer_id"]), decisions[2].decision_id))
        # MAXLEN ~ keeps the stream near its cap however much is appended.
        for _ in range(12):
            for j in range(250):
                writer.submit(decisions[j % 2])
            await writer.flush()
        assert await client.xlen(DECISIONS_STREAM) < 1000 + 2 * 250 + 200
    finally:
        await writer.stop()
        await client.aclose()


async def test_an_outcome_whose_log_append_failed_is_logged_by_its_replay(
    nba_server: NbaServer, stub: decisioning_pb2_grpc.DecisioningStub,
    server_store: EmbeddedRedis, demo_customers: list[dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import grpc
    from redis.exceptions import ConnectionError as RedisConnectionError

    cid = str(demo_customers[4]["customer_id"])
    resp = await stub.Decide(build_request(cid, "WEB", limit=1), timeout=5)
    action = resp.recommendations[0].action_id
    event_id = f"lost-append-{resp.decision_id}"
    req = pb.RecordOutcomeRequest(decision_id=resp.decision_id, action_id=action,
                                  customer_id=cid, outcome=pb.CLICK, event_id=event_id,
                                  channel=pb.WEB)
    writer = _writer(nba_server)
    real_append = writer.append_outcome

    async def store_fails(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("connection lost after the outcome script applied")

    # The outcome is applied to the history, then the append to the outcome stream fails.
    monkeypatch.setattr(writer, "append_outcome", store_fails)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RecordOutcome(req, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    monkeypatch.setattr(writer, "append_outcome", real_append)
    # The client retries: nothing is applied twice, and the outcome reaches the stream once.
    for _ in range(3):
        assert not (await stub.RecordOutcome(req, timeout=5)).applied
    client = aioredis.Redis.from_url(server_store.url)
    try:
        logged = [decode_outcome(f) for _, f in await client.xrange(OUTCOMES_STREAM)]
        history = await client.hget(f"nba:{{c:{cid}}}:h", f"{action}|click|n")
    finally:
        await client.aclose()
    assert [o.event_id for o in logged].count(event_id) == 1
    assert history == b"1"
