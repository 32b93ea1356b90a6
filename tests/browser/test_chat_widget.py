"""The demo page's chat widget and the inspector page in a real headless chromium."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from playwright.async_api import Page

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.server import NbaServer
from tests.browser.conftest import DWELL_S, POLL_MS, screenshot

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]


@pytest_asyncio.fixture(scope="module")
async def grpc_stub(browser_server: NbaServer
                    ) -> AsyncIterator[decisioning_pb2_grpc.DecisioningStub]:
    assert browser_server.address is not None
    async with grpc.aio.insecure_channel(browser_server.address.target) as ch:
        yield decisioning_pb2_grpc.DecisioningStub(ch)


def demo_url(server: NbaServer, **params: str) -> str:
    assert server.http is not None
    query = "&".join(f"{k}={v}" for k, v in {"poll_ms": str(POLL_MS), **params}.items())
    return f"{server.http.url}/demo?{query}"


async def open_second_page(page: Page, server: NbaServer) -> float:
    """Two page views (the sales invite needs session_page_views >= 2); -> when the second
    one started loading (monotonic)."""
    await page.goto(demo_url(server, page="home"))
    t0 = time.monotonic()
    await page.goto(demo_url(server))
    return t0


async def report(stub: decisioning_pb2_grpc.DecisioningStub, queue: str, available: int,
                 busy: int = 0) -> int:
    resp = await stub.ReportAgentCapacity(pb.AgentCapacityRequest(
        queue=queue, agents_available=available, agents_busy=busy))
    return int(resp.free_capacity)


async def test_invite_appears_after_the_configured_dwell(
    page: Page, browser_server: NbaServer, grpc_stub
) -> None:
    assert await report(grpc_stub, "sales", 2) == 3
    t0 = await open_second_page(page, browser_server)
    # Before the dwell threshold the service answers, and says why there is no invite.
    await page.wait_for_selector('#nba-chat-status[data-reasons~="DWELL_NOT_REACHED"]',
                                 state="attached")
    assert await page.locator("#nba-chat-invite").count() == 0
    invite = page.locator("#nba-chat-invite")
    await invite.wait_for(state="visible")
    waited = time.monotonic() - t0
    assert waited >= DWELL_S, f"invite after {waited:.2f}s, before the {DWELL_S}s dwell"
    assert await invite.get_attribute("data-queue") == "sales"
    assert "Questions?" in await invite.inner_text()
    await screenshot(page, "invite-shown")
    # The invite holds one of the three agent slots.
    assert await report(grpc_stub, "sales", 2) == 2


async def test_no_invite_when_agents_are_busy(
    page: Page, browser_server: NbaServer, grpc_stub
) -> None:
    assert await report(grpc_stub, "sales", 0, busy=5) == 0
    assert await report(grpc_stub, "service", 0, busy=3) == 0
    await open_second_page(page, browser_server)
    # NO_FREE_AGENT only comes after the dwell gate passed: the invite would be due now.
    await page.wait_for_selector('#nba-chat-status[data-reasons~="NO_FREE_AGENT"]',
                                 state="attached")
    await page.locator("#nba-chat-callback").wait_for(state="visible")
    assert await page.locator("#nba-chat-invite").count() == 0
    await screenshot(page, "agents-busy-callback")


async def test_declining_starts_the_cooldown(
    page: Page, browser_server: NbaServer, grpc_stub
) -> None:
    assert await report(grpc_stub, "sales", 2) == 3
    await open_second_page(page, browser_server)
    await page.locator("#nba-chat-invite").wait_for(state="visible")
    assert await report(grpc_stub, "sales", 2) == 2
    await page.click("#nba-chat-decline")
    await page.wait_for_selector('#nba-chat-status[data-reasons~="DECLINE_COOLDOWN"]',
                                 state="attached")
    assert await page.locator("#nba-chat-invite").count() == 0
    await screenshot(page, "declined-cooldown")
    # Server side: the hold went back to the queue and the session is cooling down.
    assert await report(grpc_stub, "sales", 2) == 3
    session = await page.evaluate("window.nbaChat.sessionId")
    resp = await grpc_stub.EvaluateChatTrigger(pb.ChatTriggerRequest(
        session_id=session, page_type="product", dwell_time_s=60, pages_in_session=3))
    assert not resp.show_invite and list(resp.reason_codes) == ["DECLINE_COOLDOWN"]


async def test_inspector_shows_why_a_capped_offer_was_removed(
    page: Page, browser_server: NbaServer, grpc_stub,
    demo_customers: list[dict[str, object]],
) -> None:
    catalog = browser_server.runtime.catalogs.current.catalog  # type: ignore[union-attr]
    # A customer whose top WEB action has an impression cap, then that cap used up.
    capped = None
    for c in demo_customers:
        cid = str(c["customer_id"])
        d = await grpc_stub.Decide(pb.DecideRequest(customer_id=cid, channel=pb.WEB, limit=3))
        for r in d.recommendations:
            policy = catalog.actions[catalog.index_of(r.action_id)].contact_policy
            if policy is not None and policy.max_impressions:
                capped = (cid, r.action_id, policy.max_impressions)
                break
        if capped:
            break
    assert capped is not None, "no demo customer is served an action with an impression cap"
    cid, action, cap = capped
    for i in range(cap):
        try:
            await grpc_stub.RecordOutcome(pb.RecordOutcomeRequest(
                customer_id=cid, action_id=action, outcome=pb.IMPRESSION,
                event_id=f"cap-{cid}-{i}", channel=pb.WEB))
        except grpc.aio.AioRpcError as exc:  # a per-channel cap can bite before the total
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            break
    assert browser_server.http is not None
    await page.goto(f"{browser_server.http.url}/inspector?customer_id={cid}&channel=WEB")
    cell = page.locator(f'#candidates tr[data-action="{action}"] td.removed-by')
    await cell.wait_for(state="visible")
    assert (await cell.inner_text()).strip() == "CONTACT_POLICY"
    detail = page.locator(f'#candidates tr[data-action="{action}"] td').nth(2)
    assert "impression" in (await detail.inner_text()).lower()
    # The features table shows the customer's batch features with their age.
    age_row = page.locator('#features tr[data-feature="age"]')
    assert "batch" in await age_row.inner_text()
    hist = page.locator(f'#history tr[data-action="{action}"]')
    assert "IMPRESSION" in await hist.first.inner_text()
    await screenshot(page, "inspector-capped-offer")
