"""`nba logs export`: decisions joined with outcomes, exactly once, resumable, kill-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import pytest_asyncio
import redis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.engine.catalog import load_catalog
from nba_service.logs.export import Exporter, ExportError
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from training.dataset import Dataset

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WINDOW_S = 1.0


@pytest.fixture(scope="module")
def short_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog with a 1 s response window, so windows close during the test."""
    text = (REPO / "examples" / "catalog.yaml").read_text()
    text = text.replace("response_window: 7d", f"response_window: {WINDOW_S}s")
    text = text.replace("response_window: 30d", f"response_window: {WINDOW_S}s")
    assert "response_window: 7d" not in text
    path = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    path.write_text(text)
    return path


@pytest_asyncio.fixture(scope="module")
async def export_server(
    server_store: EmbeddedRedis, model_artifact: Path, short_catalog: Path
) -> AsyncIterator[NbaServer]:
    settings = Settings(host="127.0.0.1", port=0, redis_url=server_store.url,
                        model_path=model_artifact, catalog=short_catalog)
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    yield server
    await server.stop(grace=0.5)


async def _traffic(
    server: NbaServer, customers: list[dict[str, object]], n: int, tag: str
) -> tuple[list[pb.DecideResponse], dict[tuple[str, str], tuple[int, float]]]:
    """n decisions over WEB and EMAIL; outcomes on some served actions.

    Returns the responses and the expected (label, reward) per (decision, action) with one.
    """
    assert server.address is not None
    expected: dict[tuple[str, str], tuple[int, float]] = {}
    out: list[pb.DecideResponse] = []
    kinds = [(pb.ACCEPT, 0.0, 1, 1.0), (pb.CLICK, 0.0, 1, 0.2), (pb.CONVERSION, 30.0, 1, 30.0),
             (pb.REJECT, 0.0, 0, 0.0), None]
    async with grpc.aio.insecure_channel(server.address.target) as ch:
        stub = decisioning_pb2_grpc.DecisioningStub(ch)
        for i in range(n):
            cid = str(customers[i % len(customers)]["customer_id"])
            channel = "WEB" if i % 2 else "EMAIL"
            resp = await stub.Decide(build_request(cid, channel, limit=2), timeout=5)
            out.append(resp)
            kind = kinds[i % len(kinds)]
            if kind is None or not resp.recommendations:
                continue
            outcome, value, label, reward = kind
            aid = resp.recommendations[0].action_id
            req = pb.RecordOutcomeRequest(
                customer_id=cid, decision_id=resp.decision_id, action_id=aid, outcome=outcome,
                event_id=f"{tag}-{i}", value=value)
            assert (await stub.RecordOutcome(req, timeout=5)).applied
            expected[(resp.decision_id, aid)] = (label, reward)
    log = server.runtime.decision_log
    assert log is not None
    await log.flush()
    return out, expected


def _impressions(out: Path) -> list[dict[str, object]]:
    if not (out / "impressions").is_dir():
        return []
    return ds.dataset(out / "impressions", partitioning="hive").to_table().to_pylist()


def _wait_until_closed(responses: list[pb.DecideResponse]) -> None:
    last = max(int(r.decision_id[:12], 16) for r in responses)
    deadline = time.monotonic() + 10
    while time.time() * 1000 <= last + WINDOW_S * 1000 + 50:
        assert time.monotonic() < deadline
        time.sleep(0.05)


async def test_export_labels_joins_and_is_exactly_once(
    export_server: NbaServer, server_store: EmbeddedRedis, demo_customers: list[dict[str, object]],
    demo_schema: FeatureSchema, short_catalog: Path, tmp_path: Path,
) -> None:
    client = redis.Redis.from_url(server_store.url)
    client.delete("nba:{log}:decisions", "nba:{log}:outcomes")
    responses, expected = await _traffic(export_server, demo_customers, 30, "a")
    catalog = load_catalog(short_catalog, demo_schema)
    first_ts = min(int(r.decision_id[:12], 16) for r in responses)
    out = tmp_path / "export"

    # Still inside the window: nothing is final yet, every decision is held back.
    early = Exporter(client, out, demo_schema, catalog, batch_size=7, settle_s=0,
                     progress=False).run(now_ms=first_ts + 10)
    assert (early.decisions, early.held_back) == (0, 30)
    assert early.outcomes == len(expected)
    assert _impressions(out) == []

    closed = max(int(r.decision_id[:12], 16) for r in responses) + int(WINDOW_S * 1000) + 1
    rep = Exporter(client, out, demo_schema, catalog, batch_size=7, settle_s=0,
                   progress=False).run(now_ms=closed)
    served = {(r.decision_id, a.action_id): a for r in responses for a in r.recommendations}
    assert (rep.decisions, rep.impressions, rep.held_back) == (30, len(served), 0)

    rows = _impressions(out)
    keys = [(str(r["decision_id"]), str(r["logged_action_id"])) for r in rows]
    assert len(keys) == len(set(keys)) and set(keys) == set(served)
    for r in rows:
        key = (str(r["decision_id"]), str(r["logged_action_id"]))
        label, reward = expected.get(key, (0, 0.0))  # no response: implicit negative
        assert (r["label"], r["reward"]) == (label, pytest.approx(reward)), key
        a = served[key]
        assert r["logged_propensity"] == a.selection_probability
        assert r["propensity"] == pytest.approx(a.propensity)
        assert r["rank"] == a.rank
        assert r["decision_channel"] == r["logged_channel"]
    # Each part file is a training dataset as it stands.
    part = next((out / "impressions").rglob("part-*.parquet"))
    data = Dataset.load(part, demo_schema)
    assert data.x.shape == (pq.read_metadata(part).num_rows, len(demo_schema.features))
    decisions = ds.dataset(out / "decisions", partitioning="hive").to_table()
    assert sorted(decisions.column("decision_id").to_pylist()) == sorted(
        r.decision_id for r in responses)
    outcomes = ds.dataset(out / "outcomes", partitioning="hive").to_table()
    assert outcomes.num_rows == len(expected)

    # A replayed outcome appended a second time (its first append was not confirmed but had
    # landed) is dropped, even in a later run than the first.
    _, first = client.xrange("nba:{log}:outcomes", count=1)[0]
    client.xadd("nba:{log}:outcomes", {**first, b"re": b"1"})
    dup = Exporter(client, out, demo_schema, catalog, progress=False).run(now_ms=closed)
    assert (dup.outcomes, dup.duplicate_outcomes) == (0, 1)

    # A re-run exports nothing twice; new traffic is appended exactly once.
    files = sorted(p.name for p in out.rglob("*.parquet"))
    again = Exporter(client, out, demo_schema, catalog, progress=False).run(now_ms=closed)
    assert (again.decisions, again.outcomes) == (0, 0)
    assert sorted(p.name for p in out.rglob("*.parquet")) == files
    more, _ = await _traffic(export_server, demo_customers, 4, "b")
    later = max(int(r.decision_id[:12], 16) for r in more) + int(WINDOW_S * 1000) + 1
    Exporter(client, out, demo_schema, catalog, settle_s=0, progress=False).run(now_ms=later)
    assert len(_impressions(out)) == len(served) + sum(len(r.recommendations) for r in more)

    # The output directory belongs to its group.
    with pytest.raises(ExportError, match="group"):
        Exporter(client, out, demo_schema, catalog, group="other", progress=False).run()


def _run_cli(url: str, out: Path, catalog: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NBA_REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "nba_service.cli", "logs", "export", "--out", str(out),
         "--catalog", str(catalog), "--settle", "0", "--no-progress", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _rows_by_key(out: Path) -> list[tuple[str, str, int]]:
    return sorted((str(r["decision_id"]), str(r["logged_action_id"]), int(r["label"]))  # type: ignore[call-overload]
                  for r in _impressions(out))


@pytest.mark.slow
async def test_killed_export_loses_and_duplicates_nothing(
    export_server: NbaServer, server_store: EmbeddedRedis, demo_customers: list[dict[str, object]],
    short_catalog: Path, tmp_path: Path,
) -> None:
    client = redis.Redis.from_url(server_store.url)
    client.delete("nba:{log}:decisions", "nba:{log}:outcomes")
    responses, with_outcome = await _traffic(export_server, demo_customers, 160, "k")
    _wait_until_closed(responses)
    url = server_store.url

    # Reference: an uninterrupted export by a group of its own.
    ref = tmp_path / "reference"
    p = _run_cli(url, ref, short_catalog, "--group", "reference", "--batch-size", "50")
    assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    want = _rows_by_key(ref)
    assert len(want) == sum(len(r.recommendations) for r in responses)

    # 1) Dies after writing a batch, before acknowledging it (the worst moment).
    crash = tmp_path / "crash"
    outcome_batches = -(-len(with_outcome) // 7)
    p = _run_cli(url, crash, short_catalog, "--group", "crash", "--batch-size", "7",
                 "--fail-after-batches", str(outcome_batches + 4))
    assert p.wait(60) == 3
    assert 0 < len(_rows_by_key(crash)) < len(want)
    # Re-run with another batch size: the pending batch is replaced, not duplicated.
    p = _run_cli(url, crash, short_catalog, "--group", "crash", "--batch-size", "11")
    assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    assert _rows_by_key(crash) == want

    # 2) SIGKILL at an arbitrary moment mid-run, then a re-run.
    killed = tmp_path / "killed"
    p = _run_cli(url, killed, short_catalog, "--group", "killed", "--batch-size", "3")
    deadline = time.monotonic() + 60
    while not list((killed / "decisions").rglob("part-*.parquet")) if (
            killed / "decisions").is_dir() else True:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait(10) == -signal.SIGKILL
    assert len(_rows_by_key(killed)) < len(want)
    p = _run_cli(url, killed, short_catalog, "--group", "killed", "--batch-size", "3")
    assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    assert _rows_by_key(killed) == want
    np.testing.assert_array_equal(
        sorted(ds.dataset(killed / "outcomes", partitioning="hive").to_table()
               .column("event_id").to_pylist()),
        sorted(ds.dataset(ref / "outcomes", partitioning="hive").to_table()
               .column("event_id").to_pylist()))
