"""Hot swap under load: a client sends Decide continuously over a real channel while models are
published into the registry the server watches. A valid model switches the served version
exactly once with zero failed RPCs; a corrupt one and a wrong-schema one change nothing.
Also: Admin.ReloadModel and champion/challenger routing on a real server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import redis

from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.engine.catalog import Catalog
from nba_service.runtime import Runtime
from nba_service.scoring.artifact import MANIFEST_FILE, MODEL_FILE
from nba_service.scoring.registry import publish, read_current, set_current, version_dir
from nba_service.scoring.router import challenger_bucket
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.decision_log import DECISIONS_STREAM
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.log_format import decode_decision
from training.train import train_demo_model

pytestmark = pytest.mark.integration

SLOT = "propensity"
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def second_artifact(demo_schema: FeatureSchema, demo_catalog: Catalog,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model2")
    return Path(train_demo_model(demo_schema, demo_catalog, out, n_customers=400, seed=5))


async def _serve(settings: Settings) -> NbaServer:
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    return server


@pytest_asyncio.fixture(scope="module")
async def watched(server_store: EmbeddedRedis, model_artifact: Path, demo_schema: FeatureSchema,
                  tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[tuple[NbaServer, Path]]:
    registry = tmp_path_factory.mktemp("registry")
    publish(model_artifact, registry, demo_schema)
    settings = Settings(host="127.0.0.1", port=0, redis_url=server_store.url,
                        model_registry=registry, model_watch_interval_s=0.05,
                        catalog_watch_interval_s=0)
    server = await _serve(settings)
    yield server, registry
    await server.stop(grace=0.5)


async def _until(cond: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not await cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Client:
    """Sends Decide back to back and records what every response said."""

    def __init__(self, stub: decisioning_pb2_grpc.DecisioningStub, customers: list[str]) -> None:
        self.stub = stub
        self.customers = customers
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            req = build_request(self.customers[i % len(self.customers)], "WEB", "hero",
                                {"page_type": "product", "hour_of_day": 11}, 3)
            i += 1
            try:
                resp = await self.stub.Decide(req, timeout=5)
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")
                continue
            self.versions.append(resp.model_version)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def more(self, n: int) -> None:
        """Wait for `n` more answers (failures count too, so this cannot hang on errors)."""
        target = len(self.versions) + len(self.failures) + n

        async def enough() -> bool:
            return len(self.versions) + len(self.failures) >= target

        await _until(enough, f"{n} more responses")


def _switches(versions: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(versions, versions[1:], strict=False) if a != b]


def _install_raw(src: Path, registry: Path, version: str,
                 tamper: Callable[[Path], None]) -> None:
    """Put a version into the registry the way a broken publisher or disk would: unverified."""
    dest = version_dir(registry, SLOT, version)
    shutil.copytree(src, dest)
    tamper(dest)
    set_current(registry, SLOT, version)


def _corrupt(path: Path) -> None:
    data = bytearray((path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / MODEL_FILE).write_bytes(bytes(data))


def _wrong_schema(path: Path) -> None:
    doc = json.loads((path / MANIFEST_FILE).read_text())
    doc["schema_hash"] = "0123456789abcdef"
    doc["feature_names"][0] = "age_in_days"
    (path / MANIFEST_FILE).write_text(json.dumps(doc))


async def test_publish_under_load_switches_once_and_bad_models_change_nothing(
        watched: tuple[NbaServer, Path], second_artifact: Path, model_artifact: Path,
        demo_schema: FeatureSchema, demo_customers: list[dict[str, object]]) -> None:
    server, registry = watched
    assert server.address is not None
    v1 = read_current(registry)
    async with grpc.aio.insecure_channel(server.address.target) as channel:
        stub = decisioning_pb2_grpc.DecisioningStub(channel)
        admin = decisioning_pb2_grpc.AdminStub(channel)

        async def failures() -> int:
            status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
            return int(status.details["model_failures"])

        client = Client(stub, [str(c["customer_id"]) for c in demo_customers])
        client.start()
        try:
            await client.more(20)
            v2 = await asyncio.to_thread(publish, second_artifact, registry, demo_schema)
            assert v2 != v1

            async def switched() -> bool:
                return bool(client.versions) and client.versions[-1] == v2

            await _until(switched, "the new version in responses")
            await client.more(20)

            before = await failures()
            await asyncio.to_thread(_install_raw, model_artifact, registry, "corrupt-1", _corrupt)

            async def corrupt_refused() -> bool:
                return await failures() > before

            await _until(corrupt_refused, "the corrupt model to be refused")
            await client.more(20)
            before = await failures()
            await asyncio.to_thread(_install_raw, second_artifact, registry, "schema-1",
                                    _wrong_schema)
            await _until(corrupt_refused, "the wrong-schema model to be refused")
            await client.more(20)
            status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
        finally:
            await client.stop()
    assert client.failures == []
    assert client.versions[0] == v1 and client.versions[-1] == v2
    assert _switches(client.versions) == [(v1, v2)]
    assert status.model_version == v2
    assert "schema_hash" in status.details["model_error"]
    assert status.details["model_backend"] == "compiled"
    assert int(status.details["model_swaps"]) == 1
    # Visible in metrics too: the refusals, and the version served now (no decision needed).
    text = server.runtime.safeguards.metrics.exposition().decode()
    slot = server.runtime.models.slot
    assert f'nba_model_load_failures_total{{slot="{slot}"}} 2.0' in text
    assert f'nba_model_version_info{{slot="{slot}",version="{v2}"}} 1.0' in text
    assert f'version="{v1}"' not in text


@pytest_asyncio.fixture(scope="module")
async def split(server_store: EmbeddedRedis, model_artifact: Path, second_artifact: Path,
                demo_schema: FeatureSchema, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[tuple[NbaServer, Path, str, str]]:
    registry = tmp_path_factory.mktemp("registry2")
    champion = publish(model_artifact, registry, demo_schema)
    challenger = publish(second_artifact, registry, demo_schema, slot="challenger")
    settings = Settings(host="127.0.0.1", port=0, redis_url=server_store.url,
                        model_registry=registry, model_watch_interval_s=0,
                        challenger_slot="challenger", challenger_share=0.5,
                        catalog_watch_interval_s=0)
    server = await _serve(settings)
    yield server, registry, champion, challenger
    await server.stop(grace=0.5)


async def test_challenger_share_is_stable_per_customer_and_reload_is_explicit(
        split: tuple[NbaServer, Path, str, str], demo_customers: list[dict[str, object]],
        demo_schema: FeatureSchema, second_artifact: Path) -> None:
    server, registry, champion, challenger = split
    assert server.address is not None
    ids = [str(c["customer_id"]) for c in demo_customers]
    async with grpc.aio.insecure_channel(server.address.target) as channel:
        stub = decisioning_pb2_grpc.DecisioningStub(channel)
        admin = decisioning_pb2_grpc.AdminStub(channel)
        for _ in range(2):  # the same customer gets the same arm every time
            for cid in ids:
                resp = await stub.Decide(build_request(cid, "WEB", "hero", {}, 3), timeout=5)
                want = challenger if challenger_bucket("challenger", cid) < 0.5 else champion
                assert resp.model_version == want, cid
        status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
        assert status.challenger_version == challenger
        assert status.details["challenger_mode"] == "split"

        # No watcher here: a new champion version waits for ReloadModel.
        await asyncio.to_thread(publish, second_artifact, registry, demo_schema)
        champ_arm = next(c for c in ids if challenger_bucket("challenger", c) >= 0.5)
        resp = await stub.Decide(build_request(champ_arm, "WEB", "hero", {}, 3), timeout=5)
        assert resp.model_version == champion
        r = await admin.ReloadModel(pb.ReloadModelRequest(), timeout=30)
        assert r.changed and r.version == challenger and r.previous_version == champion
        assert r.error == ""
        resp = await stub.Decide(build_request(champ_arm, "WEB", "hero", {}, 3), timeout=5)
        assert resp.model_version == challenger
        r = await admin.ReloadModel(pb.ReloadModelRequest(), timeout=30)
        assert not r.changed and r.version == challenger
        dest = version_dir(registry, "challenger", "bad-2")
        shutil.copytree(version_dir(registry, "challenger", challenger), dest)
        _corrupt(dest)
        set_current(registry, "challenger", "bad-2")
        r = await admin.ReloadModel(pb.ReloadModelRequest(slot="challenger"), timeout=30)
        assert not r.changed and r.version == challenger and "sha256" in r.error
        set_current(registry, "challenger", challenger)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.ReloadModel(pb.ReloadModelRequest(slot="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "slot" in str(err.value.details())


async def test_shadow_mode_serves_the_champion_and_carries_challenger_scores(
        server_store: EmbeddedRedis, model_artifact: Path, second_artifact: Path,
        demo_schema: FeatureSchema, demo_customers: list[dict[str, object]],
        tmp_path: Path) -> None:
    from nba_service.scoring.artifact import load_artifact
    from nba_service.types import DecisionRequest

    registry = tmp_path / "registry"
    champion = publish(model_artifact, registry, demo_schema)
    challenger = publish(second_artifact, registry, demo_schema, slot="shadow")
    settings = Settings(redis_url=server_store.url, model_registry=registry,
                        model_watch_interval_s=0, catalog_watch_interval_s=0,
                        challenger_slot="shadow", challenger_share=1.0, challenger_shadow=True,
                        score_inline_max_us=0)  # every score on a thread
    runtime = Runtime(settings)
    await runtime.start()
    try:
        cid = str(demo_customers[3]["customer_id"])
        decision = await runtime.decide(DecisionRequest(cid, "WEB", "hero", {}, 3))
        details = runtime.details()
        assert runtime.decision_log is not None
        await runtime.decision_log.flush()
    finally:
        await runtime.stop()
    client = redis.Redis.from_url(server_store.url)
    try:
        entries = [decode_decision(f[b"d"]) for _, f in client.xrange(DECISIONS_STREAM)]
    finally:
        client.close()
    logged = next(e for e in entries if e.decision_id == decision.decision_id)
    assert details["scoring_offloaded_calls"] == 2 and details["challenger_mode"] == "shadow"
    assert decision.model_version == champion
    shadow = decision.shadow
    assert shadow is not None and shadow.model_version == challenger
    assert len(shadow.action_ids) == len(shadow.scores) >= len(decision.actions)
    served = {a.action_id: a.propensity for a in decision.actions}
    assert set(served) <= set(shadow.action_ids)
    # the served propensities are the champion's, the shadow ones the challenger's
    other = load_artifact(second_artifact, demo_schema)
    assert other.version == challenger
    assert any(abs(shadow.scores[shadow.action_ids.index(a)] - p) > 1e-9
               for a, p in served.items())
    # The log keeps the challenger's score of every candidate, next to the champion's.
    assert logged.shadow == {challenger: list(shadow.scores)}
    assert list(shadow.action_ids) == logged.candidate_ids
