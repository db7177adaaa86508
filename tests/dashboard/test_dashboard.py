"""The dashboard in headless Chromium: it loads, live numbers move while signals flow, and a
deletion appears and its stores turn confirmed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.config import Settings
from headwater.demo.live import TeamTraffic
from headwater.gateway.security import KEY_CACHE_S
from headwater.stack import EmbeddedStack
from tests._live import free_port
from tests.conftest import IN_CI

CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.path.exists(p)), None
)


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        message = "Chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    s = EmbeddedStack(
        Settings.from_env(tmp_path / "hw"), port=free_port(), orchestrator_interval_s=0.2
    )
    s.start()
    yield s
    s.stop()


@pytest.mark.browser
def test_dashboard_is_live_and_shows_deletions(
    browser: Any, stack: EmbeddedStack, tmp_path: Path
) -> None:
    teams = TeamTraffic(stack.app.keys, stack.url, rate=800, invalid_rate=0.05)
    teams.start()
    operator, _ = stack.app.keys.create("sre", roles=("operator", "reader"))
    producer = teams.key("web")
    privacy, _ = stack.app.keys.create("privacy-office", roles=("privacy",))
    try:
        # The page's CSP forbids eval, which Playwright's wait_for_function relies on.
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
        page = context.new_page()
        loaded = page.goto(f"{stack.url}/dashboard")
        assert loaded is not None
        assert "frame-ancestors 'none'" in loaded.headers["content-security-policy"]
        # Without a session the page shows the login and nothing else.
        page.wait_for_selector("#login-section:not([hidden])", timeout=10_000)
        assert page.locator("#data").is_hidden()
        assert page.inner_text("#accepted-total") == "0"
        # A producer key is not enough: the dashboard needs the operator role.
        page.fill("#login-key", producer)
        page.click("#login button")
        page.wait_for_function(
            "document.getElementById('login-error').textContent.includes('operator')",
            timeout=10_000,
        )
        assert page.locator("#data").is_hidden()
        page.fill("#login-key", operator)
        page.click("#login button")
        page.wait_for_selector("#data:not([hidden])", timeout=10_000)
        (cookie,) = context.cookies()
        assert cookie["name"] == "hw_session"
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert operator not in cookie["value"]
        page.wait_for_function(
            "Number(document.getElementById('accepted-total').textContent.replace(/,/g,'')) > 0",
            timeout=20_000,
        )
        first = int(page.inner_text("#accepted-total").replace(",", ""))
        page.wait_for_function(
            f"Number(document.getElementById('accepted-total').textContent.replace(/,/g,''))"
            f" > {first}",
            timeout=20_000,
        )
        assert page.locator("#ingestion tbody tr[data-team='web']").count() == 1
        page.wait_for_selector("#freshness tbody tr", timeout=30_000)
        page.wait_for_selector("#lag tbody tr[data-group='features']")
        page.wait_for_function(
            "document.getElementById('example').textContent.includes('rule')", timeout=20_000
        )

        created = httpx.post(
            f"{stack.url}/v1/deletions",
            json={"user_id": "u0000001", "legal_basis": "gdpr-art17"},
            headers={"Authorization": f"Bearer {privacy}"},
        )
        assert created.status_code == 202
        request_id = created.json()["request_id"]
        row = f"#deletions tr.request[data-request='{request_id}']"
        page.wait_for_selector(row, timeout=20_000)
        page.wait_for_function(
            f"document.querySelector(\"{row} .request-status\").textContent === 'completed'",
            timeout=30_000,
        )
        statuses = page.locator("#deletions tr.store-row .store-status").all_inner_texts()
        assert statuses
        assert set(statuses) == {"confirmed"}

        page.fill("#user-id", "demo-nobody")
        page.click("#lookup button")
        page.wait_for_selector("#user-state")
        assert page.inner_text("#user-state") == "no row"
        # A feature backfill's run and its progress have a row of their own.
        version = stack.app.features_status()["version"]
        assert isinstance(version, int)
        run = stack.app.feature_backfills.start("backfill", version + 1, {"recent_buys": 2})
        stack.app.feature_backfills.update(
            run.id, state="failed", progress={"users_done": 3, "users_total": 10}
        )
        backfill = f"#backfills tr.backfill[data-run='{run.id}']"
        page.wait_for_selector(backfill, timeout=15_000)
        assert page.inner_text(f"{backfill} .backfill-done") == "30%"
        assert page.inner_text(f"{backfill} .backfill-state") == "failed"
        assert page.inner_text("#features-version") == f"version {version}"
        # HEADWATER_SCREENSHOT=docs/dashboard.png refreshes the picture in the docs.
        target = os.environ.get("HEADWATER_SCREENSHOT") or str(tmp_path / "dashboard.png")
        page.screenshot(path=target, full_page=True)
        # The example rejected event shows the shape, never the values.
        example = page.inner_text("#example")
        assert "<string," in example
        assert "u00" not in example
        # Logging out ends the session: the page asks again, the cookie stops working.
        page.click("#logout")
        page.wait_for_selector("#login-section:not([hidden])", timeout=10_000)
        time.sleep(KEY_CACHE_S + 0.1)  # a gateway trusts a session lookup that long
        stale = httpx.get(
            f"{stack.url}/v1/stats/consumers", cookies={"hw_session": cookie["value"]}
        )
        assert stale.status_code == 401
        context.close()
    finally:
        teams.stop()
