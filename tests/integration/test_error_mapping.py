"""The one interceptor: NbaError -> its status code; anything else -> generic INTERNAL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.errors import ResourceExhausted
from nba_service.server import NbaServer
from nba_service.settings import Settings

pytestmark = pytest.mark.integration

SECRET = "stack-detail-that-must-not-leak"


class ExplodingRuntime:
    """A runtime whose operations fail in the two ways the interceptor distinguishes."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def ready(self) -> bool:
        return True

    async def decide(self, req: Any) -> Any:
        raise RuntimeError(SECRET)

    async def record_outcome(self, ev: Any) -> bool:
        raise ResourceExhausted("budget store is saturated, retry later")


@pytest_asyncio.fixture(scope="module")
async def stub() -> AsyncIterator[decisioning_pb2_grpc.DecisioningStub]:
    server = NbaServer(Settings(port=0), ExplodingRuntime())  # type: ignore[arg-type]
    address = await server.start()
    async with grpc.aio.insecure_channel(address.target) as ch:
        yield decisioning_pb2_grpc.DecisioningStub(ch)
    await server.stop(grace=0.1)


async def test_unexpected_errors_are_internal_with_a_generic_message(
    stub: decisioning_pb2_grpc.DecisioningStub, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Decide(build_request("c1", "WEB"), timeout=5)
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in exc.value.details()
    assert "Traceback" not in exc.value.details()
    # ... while the server log keeps the detail for operators.
    assert any(SECRET in (r.exc_text or "") or SECRET in str(r.exc_info) for r in caplog.records)


async def test_nba_errors_keep_their_code_and_message(
    stub: decisioning_pb2_grpc.DecisioningStub,
) -> None:
    req = pb.RecordOutcomeRequest(customer_id="c", action_id="a", outcome=pb.CLICK, event_id="e")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.RecordOutcome(req, timeout=5)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exc.value.details() == "budget store is saturated, retry later"
