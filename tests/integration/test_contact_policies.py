"""Contact policies against a real valkey-server (the Lua admission script) and a real gRPC server.

The step-by-step comparison with a reference model is in test_contact_policies_model.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
import yaml

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.engine.catalog import Catalog, parse_catalog
from nba_service.engine.policies import DAY_MS, HOUR_MS, PolicyTable, VerdictCode, contact_verdict
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.keys import history_key
from nba_service.store.outcomes import OutcomeStatus, OutcomeWriter
from nba_service.store.policies import decision_key, parse_history
from tests.unit.test_policies import policy_doc

from .conftest import server_settings

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
CHANNELS = ("WEB", "EMAIL")


@pytest.fixture(scope="module")
def catalog(demo_schema: FeatureSchema) -> Catalog:
    return parse_catalog(policy_doc(), demo_schema)


# ---------------------------------------------------------------- store layer
G, L, M, S = "card_gold", "loan_personal", "mortgage_first_home", "savings_bonus"


@pytest.mark.parametrize(
    ("action", "channel", "setup", "code", "until"),
    [
        (G, "WEB", [(G, "reject", "WEB", 0)], VerdictCode.REJECTED, 30 * DAY_MS),
        (G, "WEB", [(G, "impression", "WEB", 0), (G, "impression", "EMAIL", 5),
                    (G, "impression", "CALL_CENTRE", 9)], VerdictCode.MAX_IMPRESSIONS, 7 * DAY_MS),
        (G, "WEB", [(G, "impression", "WEB", 0), (G, "impression", "WEB", 5)],
         VerdictCode.MAX_IMPRESSIONS_CHANNEL, 7 * DAY_MS),
        (L, "WEB", [(L, "impression", "EMAIL", 0)], VerdictCode.COOLDOWN, DAY_MS),
        (S, "EMAIL", [(G, "impression", "EMAIL", 0)], VerdictCode.CHANNEL_COOLDOWN, HOUR_MS),
        (S, "EMAIL", [(G, "impression", "EMAIL", 0), (M, "impression", "CALL_CENTRE", 1),
                      (L, "impression", "EMAIL", HOUR_MS)],
         VerdictCode.CHANNEL_MAX_CONTACTS, DAY_MS),
    ],
)
async def test_admission_boundaries_match_the_decision_verdict(
    catalog: Catalog, redis_async: aioredis.Redis, action: str, channel: str,
    setup: list[tuple[str, str, str, int]], code: VerdictCode, until: int,
) -> None:
    """Refused 1 ms before the documented end, admitted exactly at it, with the same `until`."""
    table = PolicyTable(catalog)
    writer = OutcomeWriter(redis_async)
    cid = f"edge-{code.value}"
    for n, (subject, outcome, ch, dt) in enumerate(setup):
        r = await writer.record(cid, subject, outcome, f"s{n}", T0 + dt, 0.0, channel=ch,
                                params=table.admission(catalog.index_of(subject), ch))
        assert r.status is OutcomeStatus.APPLIED, (outcome, r)
    params = table.admission(catalog.index_of(action), channel)
    edge = T0 + until
    history = parse_history(await redis_async.hgetall(history_key(cid)))
    a = catalog.actions[catalog.index_of(action)]
    decided = contact_verdict(a.contact_policy, catalog.channel_limits.get(channel), a.fallback,
                              history.of(action), history.contacts.get(channel, ()), channel,
                              edge - 1)
    refused = await writer.record(cid, action, "impression", "probe-1", edge - 1, 0.0,
                                  channel=channel, params=params)
    assert refused.status is OutcomeStatus.REFUSED and refused.verdict == decided
    assert decided is not None and decided.code is code and decided.until_ms == edge
    admitted = await writer.record(cid, action, "impression", "probe-2", edge, 0.0,
                                   channel=channel, params=params)
    assert admitted.status is OutcomeStatus.APPLIED


async def test_1000_concurrent_impressions_against_a_cap_of_3_admit_exactly_3(
    catalog: Catalog, embedded_redis: EmbeddedRedis, redis_async: aioredis.Redis
) -> None:
    table = PolicyTable(catalog)
    index = catalog.index_of("mortgage_first_home")
    params = table.admission(index, "WEB")
    assert params.max_impressions == 3
    pool = aioredis.BlockingConnectionPool.from_url(embedded_redis.url, max_connections=64)
    client = aioredis.Redis(connection_pool=pool)
    writer = OutcomeWriter(client)
    try:
        results = await asyncio.gather(*(
            writer.record("conc", "mortgage_first_home", "impression", f"ev-{i}", T0, 0.0,
                          channel="WEB", params=params)
            for i in range(1000)
        ))
    finally:
        await client.aclose()
        await pool.disconnect()
    statuses = [r.status for r in results]
    assert statuses.count(OutcomeStatus.APPLIED) == 3
    assert statuses.count(OutcomeStatus.REFUSED) == 997
    assert {r.verdict.code for r in results if r.verdict} == {VerdictCode.MAX_IMPRESSIONS}
    history = parse_history(await redis_async.hgetall(history_key("conc")))
    assert history.of("mortgage_first_home").impressions == (T0, T0, T0)
    assert int(await redis_async.hget(history_key("conc"), "mortgage_first_home|impression|n")) \
        == 3


async def test_customer_ids_are_exact_byte_strings(catalog: Catalog,
                                                   redis_async: aioredis.Redis) -> None:
    writer = OutcomeWriter(redis_async)
    params = PolicyTable(catalog).admission(catalog.index_of("loan_personal"), "WEB")
    for cid in ("Alice", "alice", "ALICE ", "Ålice"):
        r = await writer.record(cid, "loan_personal", "impression", "e1", T0, 0.0,
                                channel="WEB", params=params)
        assert r.status is OutcomeStatus.APPLIED, cid
    r = await writer.record("Alice", "loan_personal", "impression", "e2", T0 + 1, 0.0,
                            channel="WEB", params=params)
    assert r.status is OutcomeStatus.REFUSED and r.verdict is not None
    assert r.verdict.code is VerdictCode.COOLDOWN


async def test_decision_check_refuses_unknown_decisions_and_unserved_actions(
    catalog: Catalog, redis_async: aioredis.Redis
) -> None:
    writer = OutcomeWriter(redis_async)
    await redis_async.hset(decision_key("dc", "dec-1"), mapping={"card_gold": "0.8"})
    before = await redis_async.keys("nba:{c:dc}*")

    async def send(action: str, decision: str, ev: str) -> OutcomeStatus:
        r = await writer.record("dc", action, "click", ev, T0, 0.0, channel="WEB",
                                decision_id=decision)
        return r.status

    assert await send("loan_personal", "dec-1", "x1") is OutcomeStatus.NOT_SERVED
    assert await send("card_gold", "dec-2", "x2") is OutcomeStatus.UNKNOWN_DECISION
    assert await redis_async.keys("nba:{c:dc}*") == before  # nothing written
    assert await send("card_gold", "dec-1", "x3") is OutcomeStatus.APPLIED
    assert await send("card_gold", "", "x4") is OutcomeStatus.APPLIED  # no decision: no check


def test_decision_key_is_the_decision_log_record() -> None:
    from nba_service.store.decision_log import decision_record_key

    assert decision_key("c 1", "0a1b") == decision_record_key("c 1", "0a1b") \
        == "nba:{c:c 1}:d:0a1b"


# ---------------------------------------------------------------- through the gRPC server
@pytest.fixture(scope="module")
def policy_catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy-catalog") / "catalog.yaml"
    path.write_text(yaml.safe_dump(policy_doc()))
    return path


@pytest_asyncio.fixture(scope="module")
async def policy_stub(
    server_store: EmbeddedRedis, model_artifact: Path, policy_catalog_path: Path
) -> AsyncIterator[decisioning_pb2_grpc.DecisioningStub]:
    # Room for 1,000 RPCs at once on a busy 2-core box: this module tests admission, not
    # load shedding or deadlines.
    settings = server_settings(server_store, model_artifact).model_copy(
        update={"catalog": policy_catalog_path, "max_in_flight": 2048, "max_deadline_s": 60.0,
                "redis_timeout_s": 20.0})
    server = NbaServer(settings, Runtime(settings))
    address = await server.start()
    try:
        async with grpc.aio.insecure_channel(address.target) as ch:
            yield decisioning_pb2_grpc.DecisioningStub(ch)
    finally:
        await server.stop(grace=0.5)


async def _decide(stub: decisioning_pb2_grpc.DecisioningStub, customer: str, channel: int
                  ) -> pb.DecideResponse:
    return await stub.Decide(pb.DecideRequest(customer_id=customer, channel=channel, limit=10,
                                              explain=True), timeout=10)


def _removed(resp: pb.DecideResponse, action_id: str) -> tuple[str, str]:
    c = next(c for c in resp.explanation.candidates if c.action_id == action_id)
    return c.removed_by, c.detail


def _served(resp: pb.DecideResponse) -> set[str]:
    return {r.action_id for r in resp.recommendations}


async def _impression(stub: decisioning_pb2_grpc.DecisioningStub, customer: str, action: str,
                      channel: int, event_id: str) -> pb.RecordOutcomeResponse:
    return await stub.RecordOutcome(pb.RecordOutcomeRequest(
        customer_id=customer, action_id=action, outcome=pb.IMPRESSION, event_id=event_id,
        channel=channel), timeout=10)


async def test_impressions_until_the_cap_then_the_action_disappears(
    policy_stub: decisioning_pb2_grpc.DecisioningStub,
) -> None:
    stub, cid = policy_stub, "cap-1"
    assert "card_gold" in _served(await _decide(stub, cid, pb.WEB))
    for i in range(2):
        assert (await _impression(stub, cid, "card_gold", pb.WEB, f"imp-{i}")).applied
    web = await _decide(stub, cid, pb.WEB)
    assert "card_gold" not in _served(web)
    by, detail = _removed(web, "card_gold")
    assert by == "CONTACT_POLICY"
    assert detail.startswith("max 2 impressions on WEB / 7d reached until ")
    # The per-channel cap leaves the call centre open, until the third impression overall.
    assert "card_gold" in _served(await _decide(stub, cid, pb.CALL_CENTRE))
    assert (await _impression(stub, cid, "card_gold", pb.CALL_CENTRE, "imp-2")).applied
    cc = await _decide(stub, cid, pb.CALL_CENTRE)
    assert "card_gold" not in _served(cc)
    assert _removed(cc, "card_gold")[1].startswith("max 3 impressions / 7d reached until ")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _impression(stub, cid, "card_gold", pb.CALL_CENTRE, "imp-3")
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "CONTACT_POLICY: max 3 impressions / 7d reached" in exc.value.details()
    # A replay of an admitted impression is a duplicate, not a refusal.
    assert not (await _impression(stub, cid, "card_gold", pb.WEB, "imp-0")).applied


async def test_reject_on_web_suppresses_the_offer_in_the_call_centre(
    policy_stub: decisioning_pb2_grpc.DecisioningStub,
) -> None:
    stub, cid = policy_stub, "xc-1"
    assert "card_gold" in _served(await _decide(stub, cid, pb.CALL_CENTRE))
    await stub.RecordOutcome(pb.RecordOutcomeRequest(
        customer_id=cid, action_id="card_gold", outcome=pb.REJECT, event_id="rej-1",
        channel=pb.WEB), timeout=10)
    cc = await _decide(stub, cid, pb.CALL_CENTRE)
    assert "card_gold" not in _served(cc)
    by, detail = _removed(cc, "card_gold")
    assert by == "CONTACT_POLICY" and detail.startswith("suppressed 30d after reject until ")


async def test_outcome_with_a_decision_id_must_match_a_served_action(
    policy_stub: decisioning_pb2_grpc.DecisioningStub,
) -> None:
    stub, cid = policy_stub, "dec-1"
    resp = await stub.Decide(pb.DecideRequest(customer_id=cid, channel=pb.WEB, limit=1),
                             timeout=10)
    served = resp.recommendations[0].action_id
    other = next(a for a in ("savings_bonus", "loan_personal") if a != served)

    def req(action: str, decision: str, ev: str) -> pb.RecordOutcomeRequest:
        return pb.RecordOutcomeRequest(customer_id=cid, action_id=action, outcome=pb.CLICK,
                                       event_id=ev, decision_id=decision, channel=pb.WEB)

    assert (await stub.RecordOutcome(req(served, resp.decision_id, "d1"), timeout=10)).applied
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.RecordOutcome(req(other, resp.decision_id, "d2"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"was not served in decision {resp.decision_id!r}" in exc.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.RecordOutcome(req(served, "no-such-decision", "d3"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown or expired decision" in exc.value.details()


async def test_impression_needs_a_channel(
    policy_stub: decisioning_pb2_grpc.DecisioningStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await policy_stub.RecordOutcome(pb.RecordOutcomeRequest(
            customer_id="nc", action_id="card_gold", outcome=pb.IMPRESSION, event_id="n1"),
            timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("channel")


@pytest.mark.slow
async def test_1000_concurrent_impressions_through_the_server_admit_exactly_3(
    policy_stub: decisioning_pb2_grpc.DecisioningStub, server_store: EmbeddedRedis
) -> None:
    refusals: list[str] = []

    async def one(i: int) -> bool:
        try:
            return (await _impression(policy_stub, "conc-grpc", "mortgage_first_home", pb.WEB,
                                      f"c-{i}")).applied
        except grpc.aio.AioRpcError as exc:
            refusals.append(f"{exc.code().name}: {exc.details()}")
            return False

    admitted = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 120)
    assert sum(admitted) == 3
    assert len(refusals) == 997
    assert {r.split(" until ")[0] for r in refusals} == {
        "RESOURCE_EXHAUSTED: impression of 'mortgage_first_home' not admitted: CONTACT_POLICY: "
        "max 3 impressions / 30d reached"}
    raw = redis.Redis.from_url(server_store.url).hgetall(history_key("conc-grpc"))
    assert len(parse_history(raw).of("mortgage_first_home").impressions) == 3
