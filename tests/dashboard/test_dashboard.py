"""The dashboard in headless Chromium: it loads, live numbers move while signals flow, the
last hour's charts fill from the gateway's ring, open deletions show their stores above the
latest completed, the nightly batch's runs are listed, and no card clips its last column at
1400 px."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from headwater.batch.state import BatchState
from headwater.config import Settings
from headwater.demo.live import TeamTraffic
from headwater.erasure.records import Participant
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
    # The ring samples every half second here, so the charts fill within the test.
    settings = msgspec.structs.replace(Settings.from_env(tmp_path / "hw"), dashboard_sample_s=0.5)
    s = EmbeddedStack(settings, port=free_port(), orchestrator_interval_s=0.2)
    s.start()
    yield s
    s.stop()


#: Every card whose content reaches past its right edge (clipped or scrolled): none may.
OVERFLOWING = """() => [...document.querySelectorAll('#data > section')].filter((s) => {
  const right = s.getBoundingClientRect().right;
  return s.scrollWidth > s.clientWidth + 1 ||
    [...s.querySelectorAll('table')].some((t) => t.getBoundingClientRect().right > right + 0.5);
}).map((s) => s.id)"""


#: The height (of 56) the answers chart's 429 line reaches.
PEAK_429 = """() => {
  const d = document.querySelector("figure[data-chart='responses'] path.s0")?.getAttribute("d");
  const ys = (d || "").split(/[ML]/).filter(Boolean).map((xy) => 56 - Number(xy.split(",")[1]));
  return Math.max(0, ...ys);
}"""


def _path_points(page: Any, selector: str) -> int:
    """How many points the chart's line has (M and L commands of its path)."""
    d = page.get_attribute(selector, "d") or ""
    return d.count("M") + d.count("L")


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
        # Completed, it moves to the latest completed in one line: every store confirmed.
        done = f"#completed tr.completed[data-request='{request_id}']"
        page.wait_for_selector(done, timeout=30_000)
        confirmed, stores = page.inner_text(f"{done} .request-confirmed").split("/")
        assert confirmed == stores
        assert int(stores) >= 3
        # An open request keeps its place above the completed, with each store's state,
        # however many completed after it.
        now = datetime.now(UTC)
        stack.app.ledger.create(
            request_id="er_waiting",
            subject_hash="waiting",
            user_id="u-waiting",
            legal_basis="gdpr-art17",
            received_at=now,
            deadline=now + timedelta(days=30),
            participants=[Participant("partner-export", "partner sftp", 3600)],
        )
        for n in range(6):
            more = httpx.post(
                f"{stack.url}/v1/deletions",
                json={"user_id": f"u000010{n}", "legal_basis": "gdpr-art17"},
                headers={"Authorization": f"Bearer {privacy}"},
            )
            assert more.status_code == 202
        page.wait_for_function(
            "document.querySelectorAll('#completed tr.completed').length === 5 && "
            "document.getElementById('deletion-counts').textContent.includes('completed 7')",
            timeout=60_000,
        )
        waiting = "#deletions tr.request[data-request='er_waiting']"
        page.wait_for_selector(waiting)
        assert page.inner_text(f"{waiting} .request-status") == "open"
        assert page.locator("#deletions tr.request").count() == 1
        assert page.locator("#deletions tr.store-row .store-status").all_inner_texts() == [
            "pending"
        ]
        assert page.locator("#deletions").is_visible()

        # An id is looked up as itself ("a/b" is one id), or not at all: a browser reads
        # ".." as a step up the path, even percent-encoded.
        for user, state in (
            ("demo-nobody", "no row"),
            ("a/b", "no row"),
            (
                "..",
                "the ids . and .. cannot be looked up from a browser: use POST /v1/features/batch",
            ),
        ):
            page.evaluate("document.getElementById('user-freshness').innerHTML = ''")
            page.fill("#user-id", user)
            page.click("#lookup button")
            page.wait_for_selector("#user-state")
            assert page.inner_text("#user-state") == state, user
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
        # The last hour: one chart per team, group and event type, drawn from the ring.
        state = BatchState(stack.app.control)
        batch_run = state.start_run("nightly", host="batch-1")
        state.finish_run(
            batch_run,
            status="succeeded",
            days=["2026-12-01", "2026-12-02"],
            as_of=None,
            archive_version=4,
            detail={},
        )
        # A key over its rate limit: its 429s show in the answers chart.
        slow, _ = stack.app.keys.create("web", rate_limit_eps=1, burst=1)
        limited = [
            httpx.post(
                f"{stack.url}/v1/signals",
                json=[],
                headers={"Authorization": f"Bearer {slow}"},
            ).status_code
            for _ in range(5)
        ]
        assert 429 in limited
        page.wait_for_selector(
            f"#batch-runs tr.batch-run[data-run='{batch_run}'] .batch-status", timeout=20_000
        )
        assert (
            page.inner_text(f"#batch-runs tr.batch-run[data-run='{batch_run}'] .batch-status")
            == "succeeded"
        )
        # The 429 line rises off the floor of its chart (its y is measured from the top).
        page.wait_for_function(f"({PEAK_429})() > 10", timeout=20_000)
        for team in ("web", "ios", "android"):
            assert _path_points(page, f"figure[data-chart='ingest:{team}'] path.accepted") >= 5
        assert _path_points(page, "figure[data-chart='lag:features'] path.events") >= 5
        # Freshness and publish latency have samples only where events flowed: wait for a
        # few of them on one chart.
        page.wait_for_function(
            "[...document.querySelectorAll(\"figure[data-chart^='freshness:'] path.p99\")]"
            ".some((p) => (p.getAttribute('d').match(/[ML]/g) || []).length >= 3)",
            timeout=20_000,
        )
        page.wait_for_function(
            "(document.querySelector(\"figure[data-chart='publish'] path.p50\")"
            ".getAttribute('d').match(/[ML]/g) || []).length >= 3",
            timeout=20_000,
        )
        assert _path_points(page, "figure[data-chart='erasures'] path.open") >= 5
        # Nothing is clipped at 1400 px: every card's tables end inside the card.
        assert page.evaluate(OVERFLOWING) == []
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
