"""Browser tests: Debian's chromium, headless, driven by Playwright against a real server.

Chromium is never downloaded: `bash .ci/setup` installs Debian's package when run as root;
without it these tests fail loudly (they are never skipped).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from playwright.async_api import BrowserContext, Page, async_playwright

from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.store.embedded import EmbeddedRedis
from tests.chat_fixtures import write_chat_catalog

# Session/module fixtures of the integration suite: the demo model, customers and store.
from tests.integration.conftest import (  # noqa: F401
    demo_catalog,
    demo_customers,
    model_artifact,
    server_settings,
    server_store,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
# No network on the test machines: everything that phones home is off.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DWELL_S = 2.0
"""The test catalog's chat dwell threshold: long enough to see, short enough to wait for."""
POLL_MS = 200


@pytest.fixture(scope="session")
def chromium() -> Path:
    path = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or CHROMIUM)
    if not path.exists():
        pytest.fail(
            "chromium is not installed: run `bash .ci/setup` as root (it runs "
            "`apt-get install -y chromium`) or install Debian's chromium package; "
            "the browser tests never download a browser and are never skipped",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(scope="module")
async def browser_server(
    server_store: EmbeddedRedis,  # noqa: F811
    model_artifact: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[NbaServer]:
    catalog = write_chat_catalog(tmp_path_factory.mktemp("browser"),
                                 min_dwell={"default": f"{DWELL_S}s"})
    settings = server_settings(server_store, model_artifact).model_copy(
        update={"catalog": catalog})
    server = NbaServer(settings, Runtime(settings))
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest.fixture(autouse=True)
def clean_chat(server_store: EmbeddedRedis) -> Iterator[None]:  # noqa: F811
    """No capacity reports, holds or sessions left over from an earlier test."""
    client = redis.Redis.from_url(server_store.url)
    keys = list(client.scan_iter(match="nba:{chat}:*"))
    if keys:
        client.delete(*keys)
    client.close()
    yield


@pytest_asyncio.fixture
async def page(chromium: Path, tmp_path: Path,
               request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        # A fresh user-data-dir per test: no cookies, storage or cache carry over.
        context: BrowserContext = await pw.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(chromium), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 800},
        )
        context.set_default_timeout(10_000)
        pg = context.pages[0] if context.pages else await context.new_page()
        try:
            yield pg
        finally:
            # The final state of every test is kept, pass or fail.
            await screenshot(pg, re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name) + "-end")
            await context.close()


async def screenshot(pg: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await pg.screenshot(path=str(path), full_page=True)
    return path
