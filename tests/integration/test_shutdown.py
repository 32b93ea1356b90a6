"""Graceful shutdown: SIGTERM -> NOT_SERVING -> drain -> stop(grace) -> logs flushed; a rolling
restart under load loses no request, no outcome and no decision-log entry."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.store.decision_log import DECISIONS_STREAM
from nba_service.store.embedded import EmbeddedRedis, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NBA = Path(sys.executable).with_name("nba")

# Clients retry UNAVAILABLE (the port closed between two server processes) with backoff, and
# wait_for_ready keeps calls queued while the channel reconnects.
SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "nba.v1.Decisioning"}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
}]})


@pytest.fixture
def store() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as s:
        yield s


def spawn(port: int, store: EmbeddedRedis, model: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NBA_DRAIN_S": "0.3", "NBA_SHUTDOWN_GRACE_S": "5",
           "NBA_LOG_FORMAT": "json", "NBA_CATALOG_WATCH_INTERVAL_S": "0",
           "NBA_HTTP_PORT": "0"}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [str(NBA), "serve", "--port", str(port), "--redis-url", store.url,
             "--model", str(model)],
            env=env, stdout=fh, stderr=subprocess.STDOUT,
        )


async def health(target: str) -> int | None:
    try:
        async with grpc.aio.insecure_channel(target) as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="nba.v1.Decisioning"), timeout=0.5)
            return int(resp.status)
    except grpc.aio.AioRpcError:
        return None


async def wait_status(target: str, status: int, proc: subprocess.Popen[bytes],
                      limit_s: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if await health(target) == status:
            return
        assert proc.poll() is None, "server exited"
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {status}")


async def test_restart_under_load_loses_nothing(
    store: EmbeddedRedis, model_artifact: Path, tmp_path: Path
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = spawn(port, store, model_artifact, log)
    await wait_status(target, health_pb2.HealthCheckResponse.SERVING, proc)
    run = uuid.uuid4().hex[:8]
    action = "info_fraud_awareness"
    stop = asyncio.Event()
    failures: list[str] = []
    decided = 0
    sent_events: list[tuple[str, str]] = []

    async def client(worker: int) -> None:
        nonlocal decided
        opts = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        async with grpc.aio.insecure_channel(target, options=opts) as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            i = 0
            while not stop.is_set():
                cid = f"r{run}-{worker}-{i % 5}"
                event = f"{run}-{worker}-{i}"
                try:
                    await stub.Decide(build_request(cid, "WEB"), timeout=90,
                                      wait_for_ready=True)
                    decided += 1
                    await stub.RecordOutcome(
                        pb.RecordOutcomeRequest(customer_id=cid, action_id=action,
                                                outcome=pb.IMPRESSION, event_id=event,
                                                channel=pb.WEB),
                        timeout=90, wait_for_ready=True)
                    sent_events.append((cid, event))
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                i += 1

    workers = [asyncio.create_task(client(w)) for w in range(4)]
    try:
        while decided < 40:
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        # Draining: the port is still open and health says NOT_SERVING before it closes.
        seen = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 and proc.poll() is None:
            seen = await health(target)
            if seen == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
        assert seen == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await asyncio.to_thread(proc.wait, 30) == 0
        proc = spawn(port, store, model_artifact, log)
        await wait_status(target, health_pb2.HealthCheckResponse.SERVING, proc)
        before = decided
        while decided < before + 40:
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
    assert failures == [], failures
    assert decided >= 80
    client_ = redis.Redis.from_url(store.url)
    # Zero lost outcomes: every acknowledged event_id left its exactly-once marker.
    applied = sum(
        client_.exists(f"nba:{{c:{cid}}}:e:{event}") for cid, event in sent_events
    )
    assert applied == len(sent_events)
    # The decision log was flushed at each shutdown: every answered decision is in it.
    assert client_.xlen(DECISIONS_STREAM) >= decided
    docs = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert sum(d["msg"] == "server stopped" for d in docs) == 2
