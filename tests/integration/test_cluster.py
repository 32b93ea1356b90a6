"""The online store and the loader on a real 3-master Valkey Cluster: no CROSSSLOT anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytest_asyncio
import redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.cluster import key_slot
from redis.exceptions import MovedError

from features.encoding import encode_batch_values
from features.schema import FeatureSchema
from nba_service.engine.catalog import parse_catalog
from nba_service.engine.policies import PolicyTable
from nba_service.engine.reasons import Stage
from nba_service.store.cluster import LocalCluster
from nba_service.store.keys import features_key, history_key, realtime_key
from nba_service.store.loader import load_file
from nba_service.store.online import OnlineStore
from nba_service.store.outcomes import OutcomeStatus, OutcomeWriter
from nba_service.store.policies import BudgetCounter, PolicyRead, budget_counts
from tests.unit.test_policies import policy_doc

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

NOW = 1_700_000_000_000


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_client(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url)
    await client.initialize()
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


def test_cluster_has_three_masters_owning_all_slots(cluster: LocalCluster) -> None:
    client = SyncRedisCluster.from_url(cluster.url)
    try:
        masters = client.get_primaries()
        assert len(masters) == 3
        info = client.cluster_info()
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
    finally:
        client.close()


async def test_fetch_write_and_events_on_cluster(
    cluster_client: RedisCluster, demo_schema: FeatureSchema
) -> None:
    store = OnlineStore(cluster_client, demo_schema)
    ids = [f"cust-{i}" for i in range(30)]
    # customers spread over all three masters, each customer's keys in one slot
    assert len({key_slot(features_key(c).encode()) for c in ids}) > 3
    nodes = {getattr(cluster_client.get_node_from_key(features_key(c)), "name", None)
             for c in ids}
    assert len(nodes) == 3
    for cid in ids:
        slot = key_slot(features_key(cid).encode())
        assert key_slot(realtime_key(cid).encode()) == slot == key_slot(history_key(cid).encode())

    for i, cid in enumerate(ids):
        await store.write_customer(cid, {"age": 20 + i, "segment": "vip"}, ts_ms=NOW)
        applied = await store.apply_events(
            cid, [("session_page_views", 1, "incr"), ("session_page_views", i, "incr"),
                  ("cart_value", 9.5, "max")], now_ms=NOW)
        assert applied == 3
        await cluster_client.hset(history_key(cid), mapping={b"card_gold:n": b"1"})

    for i, cid in enumerate(ids):
        snap = await store.fetch(cid, now_ms=NOW + 1000)
        assert snap.found and snap.problems == ()
        assert snap.batch.tobytes() == encode_batch_values(
            demo_schema, {"age": 20 + i, "segment": "vip"}).tobytes()
        names = store.freshness.realtime_names
        assert snap.realtime[names.index("session_page_views")] == 1 + i
        assert snap.realtime[names.index("cart_value")] == 9.5
        assert snap.history == {b"card_gold:n": b"1"}
        assert await cluster_client.pttl(realtime_key(cid)) > 0

    assert await store.forget_customer(ids[0]) == 3
    assert not (await store.fetch(ids[0], now_ms=NOW)).found


async def test_cold_start_on_cluster(
    cluster_client: RedisCluster, demo_schema: FeatureSchema
) -> None:
    snap = await OnlineStore(cluster_client, demo_schema).fetch("never-seen", now_ms=NOW)
    assert not snap.found
    np.testing.assert_array_equal(snap.batch, encode_batch_values(demo_schema, {}))


async def test_outcomes_budgets_and_policy_reads_on_cluster(
    cluster_client: RedisCluster, demo_schema: FeatureSchema
) -> None:
    # The outcome script (customer slot), the budget script (slot {b}) and the decision's fetch
    # with its budget reads riding along: three slots, never one command across them.
    catalog = parse_catalog(policy_doc(), demo_schema)
    table = PolicyTable(catalog)
    params = table.admission(catalog.index_of("card_gold"), "WEB")
    assert params.has_budget
    writer = OutcomeWriter(cluster_client)
    cids = [f"cl-{i}" for i in range(8)]  # under the hour cap of 10
    results = [await writer.record(c, "card_gold", "impression", "e1", NOW, 0.0,
                                   channel="WEB", params=params) for c in cids]
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * len(cids)
    again = await writer.record(cids[0], "card_gold", "impression", "e1", NOW, 0.0,
                                channel="WEB", params=params)
    assert again.status is OutcomeStatus.DUPLICATE
    usage = await BudgetCounter(cluster_client).usage("card_gold", NOW)
    assert (usage.day, usage.hour) == (len(cids), len(cids))

    store = OnlineStore(cluster_client, demo_schema)
    cands = np.arange(len(catalog), dtype=np.int64)
    read = PolicyRead(table, cands, "WEB", NOW + 1)
    snap = await store.fetch(cids[1], now_ms=NOW + 1, extra=read.commands)
    assert snap.history[b"#i|card_gold"] == str(NOW).encode()
    fields = read.budget_fields
    counts = budget_counts(fields, snap.extra[0], snap.extra[1])
    assert counts.day[read.budget_ids.index("card_gold")] == len(cids)
    assert read.evaluate(cands, snap.history, snap.extra).block[
        catalog.index_of("card_gold")] != Stage.BUDGET
    # Two more customers spend the hour's cap of 10: now every decision's read removes it.
    for c in ("cl-x", "cl-y"):
        r = await writer.record(c, "card_gold", "impression", "e1", NOW, 0.0, channel="WEB",
                                params=params)
        assert r.applied
    snap = await store.fetch("cl-z", now_ms=NOW + 2, extra=read.commands)
    out = read.evaluate(cands, snap.history, snap.extra)
    assert out.block[catalog.index_of("card_gold")] == Stage.BUDGET


def test_loader_on_cluster(
    cluster: LocalCluster, tmp_path: Path, demo_schema: FeatureSchema
) -> None:
    src = tmp_path / "c.parquet"
    pq.write_table(pa.table({"customer_id": [str(i) for i in range(500)],
                             "age": list(range(500))}), src)
    client = SyncRedisCluster.from_url(cluster.url)
    try:
        report = load_file(src, client, demo_schema, batch_size=128, progress=False, ts_ms=NOW)
        assert report.loaded == 500 and report.rejected == 0
        stored = client.mget_nonatomic([features_key(str(i)) for i in range(500)])
        assert all(v is not None for v in stored)
    finally:
        client.close()


def test_plain_client_sees_moved_for_other_slots(cluster: LocalCluster) -> None:
    # Guards the test itself: the cluster really is sharded, so a non-cluster client fails.
    plain = redis.Redis(host="127.0.0.1", port=cluster.ports[0])
    try:
        moved = 0
        for i in range(20):
            try:
                plain.get(features_key(str(i)))
            except MovedError:
                moved += 1
        assert moved > 0
    finally:
        plain.close()
