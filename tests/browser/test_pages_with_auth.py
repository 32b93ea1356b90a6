"""The demo widget and the inspector page against a server that requires bearer tokens: each
page sends its token, and a missing or under-scoped token shows the service's refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page

from nba_service.runtime import Runtime
from nba_service.security.auth import hash_token
from nba_service.server import NbaServer
from nba_service.store.embedded import EmbeddedRedis
from tests.browser.conftest import POLL_MS
from tests.chat_fixtures import write_chat_catalog
from tests.integration.conftest import server_settings

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

WIDGET, OPS = "widget-browser-token-4711", "ops-browser-token-0815"


@pytest_asyncio.fixture(scope="module")
async def authed_server(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[NbaServer]:
    root = tmp_path_factory.mktemp("browser-auth")
    tokens = root / "tokens.yaml"
    tokens.write_text(f"""tokens:
  - name: chat-widget
    sha256: {hash_token(WIDGET)}
    rpcs: [nba.v1.Decisioning/EvaluateChatTrigger, nba.v1.Decisioning/IngestEvents,
           nba.v1.Decisioning/RecordOutcome]
    channels: [CHAT, WEB]
  - name: ops
    sha256: {hash_token(OPS)}
    rpcs: ["nba.v1.Admin/*", "nba.v1.Decisioning/*"]
""")
    settings = server_settings(server_store, model_artifact).model_copy(update={
        "catalog": write_chat_catalog(root, min_dwell={"default": "60s"}),
        "auth_tokens_file": tokens})
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    yield server
    await server.stop(grace=0.5)


def demo(server: NbaServer, token: str) -> str:
    assert server.http is not None
    return f"{server.http.url}/demo?poll_ms={POLL_MS}#token={token}"


async def test_widget_sends_its_token(page: Page, authed_server: NbaServer) -> None:
    await page.goto(demo(authed_server, WIDGET))
    # An answer from the engine (the dwell is not reached yet), not an auth refusal.
    await page.wait_for_selector('#nba-chat-status[data-reasons~="DWELL_NOT_REACHED"]',
                                 state="attached")


async def test_widget_without_a_valid_token_shows_the_refusal(
    page: Page, authed_server: NbaServer,
) -> None:
    await page.goto(demo(authed_server, "not-a-token"))
    status = page.locator('#nba-chat-status[data-reasons="ERROR"]')
    await status.wait_for(state="attached")
    assert "UNAUTHENTICATED" in await status.inner_text()


async def test_inspector_needs_an_inspector_scope(
    page: Page, authed_server: NbaServer, demo_customers: list[dict[str, object]],
) -> None:
    assert authed_server.http is not None
    cid = str(demo_customers[0]["customer_id"])
    await page.goto(f"{authed_server.http.url}/inspector")
    await page.fill("#customer-id", cid)
    error = page.locator("#inspect-error")
    await page.click("#inspect")
    await page.wait_for_function(
        "document.getElementById('inspect-error').textContent.length > 0")
    assert "UNAUTHENTICATED" in await error.inner_text()
    # The chat-widget token is real but may not read the inspector.
    await page.fill("#token", WIDGET)
    await page.click("#inspect")
    await page.wait_for_function(
        "document.getElementById('inspect-error').textContent.includes('PERMISSION_DENIED')")
    await page.fill("#token", OPS)
    await page.click("#inspect")
    await page.locator("#result").wait_for(state="visible")
    assert await page.locator("#candidates tbody tr").count() > 0
    assert await error.inner_text() == ""
    # The token is kept for this tab, so a reload with the customer in the URL still works.
    await page.reload()
    await page.locator("#candidates tbody tr").first.wait_for(state="visible")
    assert await page.input_value("#token") == OPS
