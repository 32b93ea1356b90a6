"""Batch decisioning: the DecideStream RPC and `nba batch decide` over a real store and model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.cli import main
from nba_service.client import build_request
from nba_service.engine.catalog import Catalog
from nba_service.store.decision_log import DECISIONS_STREAM, decision_record_key
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.log_format import decode_decision

pytestmark = pytest.mark.integration


def _requests(customers: list[dict[str, object]], n: int) -> list[pb.DecideRequest]:
    out = []
    for i in range(n):
        channel = ("EMAIL", "WEB", "CALL_CENTRE")[i % 3]
        req = build_request(str(customers[i % len(customers)]["customer_id"]), channel, limit=2)
        req.request_id = f"r{i}"
        out.append(req)
    return out


async def test_decide_stream_answers_every_request_in_order(
    stub: decisioning_pb2_grpc.DecisioningStub, demo_customers: list[dict[str, object]],
    demo_catalog: Catalog,
) -> None:
    reqs = _requests(demo_customers, 120)

    async def send() -> AsyncIterator[pb.DecideRequest]:
        for r in reqs:
            yield r

    got = [r async for r in stub.DecideStream(send(), timeout=30)]
    assert [g.request_id for g in got] == [r.request_id for r in reqs]
    for req, resp in zip(reqs, got, strict=True):
        assert resp.decision_id and resp.model_version
        channel = pb.Channel.Name(req.channel)
        for rec in resp.recommendations:
            assert channel in demo_catalog.actions[demo_catalog.index_of(rec.action_id)].channels
    assert len({g.decision_id for g in got}) == len(got)


async def test_decide_stream_ping_pong_and_a_bad_request_ends_it(
    channel: grpc.aio.Channel, demo_customers: list[dict[str, object]]
) -> None:
    stub = decisioning_pb2_grpc.DecisioningStub(channel)
    call = stub.DecideStream(timeout=30)
    # One at a time: the server must answer before the client sends more.
    for req in _requests(demo_customers, 3):
        await call.write(req)
        resp = await asyncio.wait_for(call.read(), 10)
        assert resp.request_id == req.request_id
    await call.write(pb.DecideRequest(channel=pb.WEB))  # no customer_id
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call.read()
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request 3" in exc.value.details() and "customer_id" in exc.value.details()


def test_nba_batch_decide_writes_ranked_results_and_logs_them(
    server_store: EmbeddedRedis, model_artifact: Path, demo_customers: list[dict[str, object]],
    demo_catalog: Catalog, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [str(c["customer_id"]) for c in demo_customers] + ["nobody-1", "nobody-2"]
    src = tmp_path / "campaign.parquet"
    pq.write_table(pa.table({"customer_id": ids, "segment": ["x"] * len(ids)}), src)
    out = tmp_path / "results.parquet"
    client = redis.Redis.from_url(server_store.url)
    before = client.xlen(DECISIONS_STREAM)
    rc = main(["batch", "decide", str(src), "--channel", "EMAIL", "--out", str(out),
               "--limit", "2", "--chunk", "7", "--redis-url", server_store.url,
               "--model", str(model_artifact), "--no-progress"])
    assert rc == 0
    assert f"decided {len(ids)} customers" in capsys.readouterr().out
    rows = pq.read_table(out).to_pylist()
    assert sorted({r["customer_id"] for r in rows}) == sorted(ids)
    email = {a.id for a in demo_catalog.actions if "EMAIL" in a.channels}
    by_customer: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_customer.setdefault(str(r["customer_id"]), []).append(r)
        assert r["channel"] == "EMAIL"
        if r["rank"]:
            assert r["action_id"] in email
    for cid, rs in by_customer.items():
        ranks = [r["rank"] for r in rs]
        assert ranks == [0] or ranks == list(range(1, len(rs) + 1)), cid
        assert len({r["decision_id"] for r in rs}) == 1
    assert all(r["degraded"] for r in by_customer["nobody-1"])  # cold start, flagged
    # Same closed loop as the API: every decision is in the log with its record.
    assert client.xlen(DECISIONS_STREAM) == before + len(ids)
    logged = {decode_decision(f[b"d"]).decision_id
              for _, f in client.xrevrange(DECISIONS_STREAM, count=len(ids))}
    assert logged == {str(r["decision_id"]) for r in rows}
    served = next(r for r in rows if r["rank"] == 1)
    assert client.hget(decision_record_key(str(served["customer_id"]),
                                           str(served["decision_id"])),
                       str(served["action_id"])) is not None


def test_nba_batch_decide_rejects_bad_input(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "list.csv"
    src.write_text("id\nc1\n")
    common = ["--out", str(tmp_path / "r.parquet"), "--redis-url", server_store.url,
              "--model", str(model_artifact), "--no-progress"]
    assert main(["batch", "decide", str(src), "--channel", "EMAIL", *common]) == 2
    assert "customer_id" in capsys.readouterr().err
    assert main(["batch", "decide", str(src), "--channel", "FAX", "--id-column", "id",
                 *common]) == 2
    assert "FAX" in capsys.readouterr().err
    assert not (tmp_path / "r.parquet").exists()
