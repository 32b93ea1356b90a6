"""Catalog hot reload on a real server: the file watcher and Admin.ReloadCatalog, under load."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis

from .conftest import EXAMPLES

pytestmark = pytest.mark.integration

BASE = (EXAMPLES / "catalog.yaml").read_bytes()


def _version(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:12]


def _write(path: Path, raw: bytes) -> None:
    """Atomic replace, as a deployment tool would do it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def _edited(lever: str) -> bytes:
    # A different lever for the first action: same shape, new content hash.
    out = BASE.replace(b"    value: 0.04 * clv + 60\n",
                       b"    value: 0.04 * clv + 60\n    lever: " + lever.encode() + b"\n", 1)
    assert out != BASE
    return out


BAD = BASE.replace(b"eligibility: age >= 21 and not has_credit_card",
                   b"eligibility: age >= 21 and not has_credit_card and __import__('os')", 1)


async def _until(cond: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def _start(store: EmbeddedRedis, model: Path, catalog: Path,
                 interval: float) -> NbaServer:
    settings = Settings(host="127.0.0.1", port=0, redis_url=store.url, model_path=model,
                        catalog=catalog, catalog_watch_interval_s=interval)
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    return server


async def test_watcher_reloads_under_load_and_keeps_serving_through_a_bad_catalog(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path: Path,
    demo_customers: list[dict[str, object]],
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_bytes(BASE)
    server = await _start(server_store, model_artifact, path, interval=0.05)
    assert server.address is not None
    versions: list[str] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()
    ids = [str(c["customer_id"]) for c in demo_customers[:8]]

    async def load(stub: decisioning_pb2_grpc.DecisioningStub, worker: int) -> None:
        i = worker
        while not stop.is_set():
            ch = ("WEB", "CALL_CENTRE", "MOBILE_APP")[i % 3]
            try:
                resp = await stub.Decide(build_request(ids[i % len(ids)], ch, limit=3),
                                         timeout=10)
                versions.append(resp.catalog_version)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc)
            i += 1

    try:
        async with grpc.aio.insecure_channel(server.address.target) as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            admin = decisioning_pb2_grpc.AdminStub(ch)
            workers = [asyncio.create_task(load(stub, w)) for w in range(4)]

            async def serving(version: str) -> bool:
                return bool(versions) and versions[-1] == version

            assert await _until_true(lambda: len(versions) >= 20)
            assert set(versions) == {_version(BASE)}

            new = _edited("1.5")
            _write(path, new)
            await _until(lambda: serving(_version(new)))
            mark = len(versions)

            _write(path, BAD)

            async def refused() -> bool:
                st = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
                return st.details.get("catalog_reload_failures") == "1"

            await _until(refused)
            status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert status.catalog_version == _version(new)
            error = status.details["catalog_reload_error"]
            assert "card_gold" in error and "eligibility" in error
            text = server.runtime.safeguards.metrics.exposition().decode()
            assert "nba_catalog_reload_failures_total 1.0" in text
            assert f'nba_catalog_version_info{{version="{_version(new)}"}} 1.0' in text
            reply = await admin.ReloadCatalog(pb.ReloadCatalogRequest(), timeout=30)
            assert not reply.changed and reply.version == _version(new)
            assert "card_gold" in reply.error
            assert await _until_true(lambda: len(versions) >= mark + 20)
            assert set(versions[mark:]) == {_version(new)}

            fixed = _edited("0.5")
            _write(path, fixed)
            await _until(lambda: serving(_version(fixed)))
            status = await admin.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert "catalog_reload_error" not in status.details
            assert status.details["catalog_reloads"] == "2"
            stop.set()
            await asyncio.gather(*workers)
    finally:
        stop.set()
        await server.stop(grace=0.5)
    assert not errors, errors[:3]
    # Every answer came from one whole catalog version, in order: old, new, fixed.
    seen = list(dict.fromkeys(versions))
    assert seen == [_version(BASE), _version(new), _version(fixed)]
    assert len(versions) > 60


async def _until_true(cond: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_admin_reload_without_watcher(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path: Path,
    demo_customers: list[dict[str, object]],
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_bytes(BASE)
    server = await _start(server_store, model_artifact, path, interval=0)
    assert server.address is not None
    try:
        async with grpc.aio.insecure_channel(server.address.target) as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            admin = decisioning_pb2_grpc.AdminStub(ch)
            same = await admin.ReloadCatalog(pb.ReloadCatalogRequest(), timeout=30)
            assert (same.changed, same.version, same.error) == (False, _version(BASE), "")
            new = _edited("2")
            _write(path, new)
            cid = str(demo_customers[0]["customer_id"])
            # No watcher: nothing changes until the reload is asked for.
            resp = await stub.Decide(build_request(cid, "WEB"), timeout=5)
            assert resp.catalog_version == _version(BASE)
            reply = await admin.ReloadCatalog(pb.ReloadCatalogRequest(), timeout=30)
            assert reply.changed and not reply.error
            assert (reply.version, reply.previous_version) == (_version(new), _version(BASE))
            resp = await stub.Decide(build_request(cid, "WEB", explain=True), timeout=5)
            assert resp.catalog_version == _version(new)
            gold = [c for c in resp.explanation.candidates if c.action_id == "card_gold"]
            assert gold and gold[0].lever == 2.0
            path.write_bytes(b"actions: [\n")
            broken = await admin.ReloadCatalog(pb.ReloadCatalogRequest(), timeout=30)
            assert not broken.changed and "not valid YAML" in broken.error
            assert broken.version == _version(new)
            path.unlink()
            gone = await admin.ReloadCatalog(pb.ReloadCatalogRequest(), timeout=30)
            assert not gone.changed and gone.error and gone.version == _version(new)
            resp = await stub.Decide(build_request(cid, "WEB"), timeout=5)
            assert resp.catalog_version == _version(new) and resp.recommendations
    finally:
        await server.stop(grace=0.1)
