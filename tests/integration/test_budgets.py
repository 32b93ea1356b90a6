"""Budgets: atomic per-action caps in a real valkey-server; pacing and removal via the server."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import redis.asyncio as aioredis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.engine.catalog import Catalog, parse_catalog
from nba_service.engine.policies import DAY_MS, PolicyTable, VerdictCode, pacing_multiplier
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.outcomes import OutcomeStatus, OutcomeWriter
from nba_service.store.policies import BudgetCounter, budget_keys
from tests.unit.test_policies import policy_doc

from .test_contact_policies import (  # noqa: F401  (module fixtures: the policy server)
    _decide,
    _impression,
    _removed,
    _served,
    policy_catalog_path,
    policy_stub,
)

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(scope="module")
def catalog(demo_schema: FeatureSchema) -> Catalog:
    return parse_catalog(policy_doc(), demo_schema)


async def test_1000_concurrent_impressions_against_a_day_budget_of_5_admit_exactly_5(
    catalog: Catalog, embedded_redis: EmbeddedRedis, redis_async: aioredis.Redis
) -> None:
    params = PolicyTable(catalog).admission(catalog.index_of("retention_fee_waiver"), "WEB")
    assert params.per_day == 5
    pool = aioredis.BlockingConnectionPool.from_url(embedded_redis.url, max_connections=64)
    client = aioredis.Redis(connection_pool=pool)
    writer = OutcomeWriter(client)
    try:
        results = await asyncio.gather(*(
            writer.record(f"bc-{i}", "retention_fee_waiver", "impression", "e", T0, 0.0,
                          channel="WEB", params=params)
            for i in range(1000)
        ))
        usage = await BudgetCounter(client).usage("retention_fee_waiver", T0)
    finally:
        await client.aclose()
        await pool.disconnect()
    assert sum(r.applied for r in results) == 5
    assert {r.verdict.code for r in results if r.verdict} == {VerdictCode.BUDGET_DAY}
    assert (usage.day, usage.hour) == (5, 5)
    # Exactly the admitted customers have the impression in their history.
    admitted = [i for i, r in enumerate(results) if r.applied]
    for i in admitted:
        assert await redis_async.hget(f"nba:{{c:bc-{i}}}:h", "#i|retention_fee_waiver") \
            == str(T0).encode()
    for key in budget_keys(T0):
        assert await redis_async.ttl(key) > DAY_MS // 1000


async def test_hour_cap_and_refunds_of_impressions_a_contact_policy_refused(
    catalog: Catalog, redis_async: aioredis.Redis
) -> None:
    table = PolicyTable(catalog)
    params = table.admission(catalog.index_of("card_gold"), "WEB")
    writer = OutcomeWriter(redis_async)
    counter = BudgetCounter(redis_async)
    # One customer: the per-channel cap (2 on WEB) refuses the third, and gives its unit back.
    statuses = [
        (await writer.record("hc-0", "card_gold", "impression", f"e{i}", T0 + i, 0.0,
                             channel="WEB", params=params)).status
        for i in range(3)
    ]
    assert statuses == [OutcomeStatus.APPLIED] * 2 + [OutcomeStatus.REFUSED]
    assert (await counter.usage("card_gold", T0)).hour == 2
    # A replay neither spends nor is refused.
    again = await writer.record("hc-0", "card_gold", "impression", "e0", T0 + 9, 0.0,
                                channel="WEB", params=params)
    assert again.status is OutcomeStatus.DUPLICATE
    assert (await counter.usage("card_gold", T0)).hour == 2
    # 50 other customers at once against the 8 units left in the hour (cap 10).
    results = await asyncio.gather(*(
        writer.record(f"hc-{i}", "card_gold", "impression", "e", T0 + 100, 0.0,
                      channel="WEB", params=params)
        for i in range(1, 51)
    ))
    assert sum(r.applied for r in results) == 8
    assert {r.verdict.code for r in results if r.verdict} == {VerdictCode.BUDGET_HOUR}
    assert (await counter.usage("card_gold", T0)).hour == 10
    # The next clock hour has a fresh hourly cap; the day's count carries on.
    nxt = T0 - T0 % 3_600_000 + 3_600_000
    r = await writer.record("hc-99", "card_gold", "impression", "e", nxt, 0.0, channel="WEB",
                            params=params)
    assert r.applied
    usage = await counter.usage("card_gold", nxt)
    assert (usage.day, usage.hour) == (11, 1)


async def test_budget_paces_then_removes_the_action_through_the_server(
    policy_stub: decisioning_pb2_grpc.DecisioningStub,  # noqa: F811
) -> None:
    for attempt in range(2):
        day = time.time_ns() // 1_000_000 // DAY_MS
        await _exhaust_and_check(policy_stub, f"bud{attempt}")
        if time.time_ns() // 1_000_000 // DAY_MS == day:
            return
    raise AssertionError("crossed UTC midnight twice")  # pragma: no cover


async def _exhaust_and_check(stub: decisioning_pb2_grpc.DecisioningStub, tag: str) -> None:
    action = "retention_fee_waiver"  # per_day: 5
    for i in range(4):
        assert (await _impression(stub, f"{tag}-{i}", action, pb.WEB, "imp")).applied
    before = _day_fraction()
    paced = await _decide(stub, f"{tag}-x", pb.WEB)
    after = _day_fraction()
    lever = next(c.lever for c in paced.explanation.candidates if c.action_id == action)
    # 1 of 5 left: the lever is clip(0.2 / time_left, 0, 1), time_left read around the call.
    lo, hi = pacing_multiplier(4, 5, before), pacing_multiplier(4, 5, after)
    assert lo - 1e-9 <= lever <= hi + 1e-9
    assert (await _impression(stub, f"{tag}-4", action, pb.WEB, "imp")).applied
    gone = await _decide(stub, f"{tag}-x", pb.WEB)
    assert action not in _served(gone)
    by, detail = _removed(gone, action)
    assert by == "BUDGET" and detail.startswith("day cap 5 reached until ")
    assert detail.endswith("T00:00:00Z")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _impression(stub, f"{tag}-5", action, pb.WEB, "imp")
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "BUDGET: day cap 5 reached" in exc.value.details()


def _day_fraction() -> float:
    now = time.time_ns() // 1_000_000
    return (now % DAY_MS) / DAY_MS
