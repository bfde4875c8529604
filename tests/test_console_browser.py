"""The operator console in a real browser: the system's chromium driven by Playwright (docs/console.md).

Skipped only where /usr/bin/chromium is absent (``.ci/run`` installs it). With ``HUB_CONSOLE_SCREENSHOTS=1``
the screenshot test also runs and saves the main pages under docs/console/.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hub.context import HUB_KEY
from hub.usage import UsageRow
from routing.platform import ConnectionStatus, utcnow
from tests.conftest import ADMIN_TOKEN, HubHarness, cpo, emsp, free_port, hub_settings, start_hub, stop_hub
from tests.console_helpers import audit_records
from tests.test_dead_letters import broadcast, dead_letters, eventually, failing, location

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install chromium "
                                "(.ci/run does) to run the console's browser tests")
if CHROMIUM.exists():
    from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "console"
TS = "2026-03-01T10:00:00Z"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        # The system's chromium, never a downloaded one; no sandbox: CI runs the tests as root.
        b = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def hub() -> AsyncIterator[HubHarness]:
    h = await start_hub(hub_settings())
    try:
        yield h
    finally:
        await stop_hub(h)


async def new_page(browser: Browser) -> Page:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()

    async def accept(dialog: Dialog) -> None:  # the confirm() of every destructive action: the operator says yes
        await dialog.accept()

    page.on("dialog", accept)
    return page


async def login(page: Page, hub: HubHarness, token: str = ADMIN_TOKEN) -> None:
    await page.goto(hub.url + "/console/login")
    await page.fill("#token", token)
    await page.click("#login")


async def test_login_refuses_a_wrong_token_and_opens_the_console_with_the_right_one(
        browser: Browser, hub: HubHarness) -> None:
    page = await new_page(browser)
    await page.goto(hub.url + "/console/partners")
    await expect(page).to_have_url(f"{hub.url}/console/login?login=1&next=/console/partners")
    await login(page, hub, "wrong-token-wrong-token-wrong-token")
    await expect(page.locator("#login-error")).to_contain_text("not the hub's admin token")
    await login(page, hub)
    await expect(page).to_have_url(hub.url + "/console/partners")
    await expect(page.locator("h1")).to_have_text("Partners")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "ocpi_hub_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"  # kept over http loopback
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    (failed,) = await audit_records(hub, outcome="unauthorized")
    assert failed.path == "/console/login"


async def test_onboarding_in_the_browser_shows_the_partner_registering(browser: Browser, hub: HubHarness) -> None:
    page = await new_page(browser)
    await login(page, hub)
    await page.fill("#partner-name", "Gamma CPO")
    await page.fill("#partner-roles", "NL:CPG:CPO")
    await page.click("#onboard")
    token_a = (await page.locator("#token-a").text_content() or "").strip()
    versions_url = (await page.locator("#versions-url").text_content() or "").strip()
    assert versions_url == hub.url + "/ocpi/versions" and len(token_a) > 20
    await expect(page.locator(".waiting")).to_contain_text("Waiting for Gamma CPO")

    partner = cpo("Gamma CPO", "CPG")
    await partner.start()
    hub.partners.append(partner)
    await partner.register(hub.session, versions_url, token_a)  # what the partner does with the two values

    await expect(page.locator(".registered")).to_contain_text("Registered in OCPI 2.2.1", timeout=5000)
    await expect(page.locator(".registered")).to_contain_text("CONNECTED")
    row = page.locator("tr[data-name='Gamma CPO']")
    await expect(row.locator("td.status")).to_have_text("CONNECTED", timeout=8000)  # the table polls too

    await row.get_by_role("button", name="Suspend").click()  # confirm dialog accepted
    await expect(page.locator("tr[data-name='Gamma CPO'] td.status")).to_have_text("SUSPENDED")
    platform = hub.app[HUB_KEY].registry.by_party("NL", "CPG")
    assert platform is not None and platform[0].status == ConnectionStatus.SUSPENDED
    suspended = [r for r in await audit_records(hub) if r.path.endswith("/suspend")]
    assert [(r.actor, r.http_status) for r in suspended] == [("console@127.0.0.1", 200)]


async def routed_session(hub: HubHarness, correlation_id: str) -> None:
    c, e = cpo(), emsp()
    await hub.connect(c)
    await hub.connect(e)
    body = {"country_code": "NL", "party_id": "CPA", "id": "S1", "start_date_time": TS, "kwh": 0.0,
            "cdr_token": {"uid": "T1", "type": "RFID", "contract_id": "DE-EMA-C1", "country_code": "DE",
                          "party_id": "EMA"}, "auth_method": "WHITELIST", "location_id": "LOC1",
            "evse_uid": "EVSE1", "connector_id": "1", "currency": "EUR", "status": "ACTIVE", "last_updated": TS}
    status, _, answer = await c.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", to=e.party, json=body,
                                     headers={"X-Correlation-ID": correlation_id})
    assert status == 200, answer


async def test_a_routed_message_is_found_by_correlation_id_with_its_trail_and_in_the_live_tail(
        browser: Browser, hub: HubHarness) -> None:
    page = await new_page(browser)
    await login(page, hub)
    await page.goto(hub.url + "/console/messages")
    await page.click("#tail-toggle")
    await expect(page.locator("#tail-state")).to_contain_text("Listening")
    correlation_id = "corr-" + uuid.uuid4().hex[:12]
    await routed_session(hub, correlation_id)

    # The live tail shows it as the audit writer stores it.
    await expect(page.locator(f"#tail tr[data-correlation='{correlation_id}']")).to_have_count(1, timeout=8000)

    await page.fill("#q-correlation", correlation_id)
    await page.click("#search")
    rows = page.locator(f"#results tr[data-correlation='{correlation_id}']")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("PUT /ocpi/2.2.1/receiver/sessions/NL/CPA/S1")
    await rows.locator("a.trail-link").click()
    await expect(page.locator("#trail-id")).to_have_text(correlation_id)
    await expect(page.locator(".step.received")).to_contain_text("from NL:CPA (Alpha CPO, OCPI 2.2.1)")
    await expect(page.locator(".step.queued")).to_contain_text("DE:EMA at Beta eMSP")
    await expect(page.locator(".step.delivered")).to_contain_text("receiver answered HTTP 200, OCPI 1000")
    await expect(page.locator(".step.answer")).to_contain_text("HTTP 200, OCPI 1000")


async def test_a_dead_letter_is_replayed_from_the_browser(browser: Browser) -> None:
    hub = await start_hub(hub_settings(broadcast_retry_window=1.0))
    try:
        sender, receiver = cpo(), emsp()
        await hub.connect(sender)
        await hub.connect(receiver)
        receiver.responder = failing(1, status=400, ocpi_status=2001)  # refuses the first push: a dead letter
        await broadcast(hub.session, sender, location("LOC1"))
        await eventually(lambda: len(receiver.received) == 1, what="the refused push")
        for _ in range(100):
            if await dead_letters(hub):
                break
            await asyncio.sleep(0.05)
        (letter,) = await dead_letters(hub)

        page = await new_page(browser)
        await login(page, hub)
        await page.goto(hub.url + "/console/messages")
        row = page.locator(f"tr[data-letter='{letter['id']}']")
        await expect(row).to_contain_text("PUT locations RECEIVER NL/CPA/LOC1")
        await row.get_by_role("button", name="Replay").click()
        await expect(page.locator("#dead-letter-notice")).to_contain_text("queued again")
        await expect(page.locator(f"tr[data-letter='{letter['id']}']")).to_have_count(0)
        await eventually(lambda: len(receiver.received) == 2, what="the replayed push")
        assert receiver.received[1].json()["id"] == "LOC1"
        assert await dead_letters(hub) == []
        replayed = [r for r in await audit_records(hub) if r.path.endswith("/replay")]
        assert [(r.actor, r.http_status) for r in replayed] == [("console@127.0.0.1", 200)]
    finally:
        await stop_hub(hub)


async def test_a_forged_post_is_refused(browser: Browser, hub: HubHarness) -> None:
    platform = await hub.connect(cpo())
    page = await new_page(browser)
    await login(page, hub)
    suspend = f"{hub.url}/console/partners/{platform['id']}/suspend"
    # A script on the console's own origin without the session's CSRF token (e.g. injected): 403.
    status = await page.evaluate("url => fetch(url, {method: 'POST'}).then(r => r.status)", suspend)
    assert status == 403
    # Another site's page posting a form to the console while the operator is logged in: SameSite=Strict keeps
    # the session cookie off the request, so the hub sees no login at all.
    attacker = web.Application()

    async def evil(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=(
            f'<form id="f" method="post" action="{suspend}"><input name="csrf_token" value="guess"></form>'
            '<script>document.getElementById("f").submit()</script>'))

    attacker.router.add_get("/", evil)
    runner = web.AppRunner(attacker)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        evil_page = await page.context.new_page()
        async with evil_page.expect_response(suspend) as answer:
            await evil_page.goto(f"http://localhost:{port}/")  # localhost and 127.0.0.1 are different sites
        assert (await answer.value).status == 401
    finally:
        await runner.cleanup()
    assert hub.app[HUB_KEY].registry.get(platform["id"]).status == ConnectionStatus.CONNECTED  # type: ignore[union-attr]
    suspends = [r.http_status for r in await audit_records(hub) if r.path.endswith("/suspend")]
    assert suspends == [401, 403]  # newest first


async def test_the_session_ends_and_the_open_page_goes_back_to_the_login(browser: Browser) -> None:
    hub = await start_hub(hub_settings(console_session_minutes=0.05))  # 3 s
    try:
        page = await new_page(browser)
        await login(page, hub)
        await expect(page).to_have_url(hub.url + "/console/partners")
        # The partners table polls every 5 s: the first poll after the end is answered with the login page.
        await expect(page).to_have_url(f"{hub.url}/console/login?expired=1&next=%2Fconsole%2Fpartners",
                                       timeout=10_000)
        await expect(page.locator(".notice")).to_contain_text("Your session ended")
        await page.goto(hub.url + "/console/messages")
        await expect(page.locator("h1")).to_have_text("Log in")
    finally:
        await stop_hub(hub)


@pytest.mark.skipif(not os.environ.get("HUB_CONSOLE_SCREENSHOTS"), reason="set HUB_CONSOLE_SCREENSHOTS=1 to "
                    "refresh the screenshots in docs/console/")
async def test_screenshots_of_the_main_pages(browser: Browser) -> None:
    hub = await start_hub(hub_settings(roaming_policy="agreements"))
    try:
        await screenshots(browser, hub)
    finally:
        await stop_hub(hub)


async def screenshots(browser: Browser, hub: HubHarness) -> None:
    """A small hub with traffic, a dead letter and some usage, then a PNG of each main page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    c, e, e2 = cpo(), emsp(), emsp("Delta eMSP", "EMD")
    for p in (c, e, e2):
        await hub.connect(p)
    for other, modules in (("DE:EMA:EMSP", []), ("DE:EMD:EMSP", ["cdrs", "locations"])):
        status, answer = await hub.admin("POST", "/admin/agreements", {
            "party_a": "NL:CPA:CPO", "party_b": other, "modules": modules, "reference": "roaming contract"})
        assert status == 201, answer
    await hub.onboard(cpo("Epsilon CPO", "CPE"))  # onboarded, not registered yet: PLANNED
    e2.responder = failing(1, status=400, ocpi_status=2001)
    await broadcast(hub.session, c, location("LOC1"))  # refused by Delta eMSP: a dead letter
    correlation_id = "corr-" + uuid.uuid4().hex[:8]
    body: dict[str, Any] = {"country_code": "NL", "party_id": "CPA", "start_date_time": TS, "end_date_time": TS,
                            "cdr_token": {"uid": "T1", "type": "RFID", "contract_id": "DE-EMA-C1",
                                          "country_code": "DE", "party_id": "EMA"}, "auth_method": "WHITELIST",
                            "currency": "EUR", "charging_periods": [], "total_time": 0.5, "last_updated": TS}
    for i, (to, kwh, cost) in enumerate(((e, 12.5, 4.1), (e, 30.25, 9.8), (e2, 7.0, 2.2))):
        status, _, _ = await c.call(hub.session, "POST", "cdrs", "RECEIVER", to=to.party,
                                    json={**body, "id": f"CDR{i}", "total_energy": kwh,
                                          "total_cost": {"excl_vat": cost}},
                                    headers={"X-Correlation-ID": correlation_id if i == 0 else uuid.uuid4().hex})
        assert status in (200, 201)
    today = utcnow().date()  # and two weeks of earlier days, so the chart has a shape
    await hub.app[HUB_KEY].store.add_usage([
        UsageRow((today - timedelta(days=d)).isoformat(), "NL:CPA", "DE:EMA", "cdrs", "EUR", 3 + d % 4,
                 40.0 + 9 * (d % 5), 13.0 + 3 * (d % 5)) for d in range(1, 14)] + [
        UsageRow((today - timedelta(days=d)).isoformat(), "NL:CPA", "DE:EMD", "cdrs", "EUR", 1 + d % 3,
                 15.0 + 4 * (d % 3), 5.0 + d % 3) for d in range(1, 14)])
    page = await new_page(browser)
    await page.goto(hub.url + "/console/login")
    await page.screenshot(path=str(SCREENSHOTS / "login.png"))
    await login(page, hub)
    await page.click("summary")  # the onboarding form is folded away once there are partners
    await page.fill("#partner-name", "Zeta eMSP")
    await page.fill("#partner-roles", "BE:ZET:EMSP")
    await page.click("#onboard")
    await expect(page.locator(".waiting")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOTS / "partners.png"), full_page=True)
    await page.goto(hub.url + "/console/messages")
    await page.screenshot(path=str(SCREENSHOTS / "messages.png"), full_page=True)
    await page.goto(f"{hub.url}/console/messages/trail?id={correlation_id}")
    await page.screenshot(path=str(SCREENSHOTS / "trail.png"), full_page=True)
    await page.goto(hub.url + "/console/insights")
    await expect(page.locator("#chart[data-drawn]")).to_have_count(1)
    await page.screenshot(path=str(SCREENSHOTS / "insights.png"), full_page=True)
    await page.goto(hub.url + "/console/reach")
    await expect(page.locator("#reach-matrix")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOTS / "reach.png"), full_page=True)


async def test_the_reach_matrix_explains_a_blocked_pair_and_an_agreement_added_in_the_browser_opens_it(
        browser: Browser) -> None:
    hub = await start_hub(hub_settings(roaming_policy="agreements"))
    try:
        c, e, e2 = cpo(), emsp(), emsp("Delta eMSP", "EMB")
        for p in (c, e, e2):
            await hub.connect(p)
        status, body = await hub.admin("POST", "/admin/agreements", {
            "party_a": "NL:CPA:CPO", "party_b": "DE:EMA:EMSP", "modules": ["sessions", "cdrs"]})
        assert status == 201, body
        # What the matrix will say is what routing does: CPA may send sessions to EMA, not to EMB.
        status, _, answer = await c.call(hub.session, "GET", "sessions", "RECEIVER", "NL/CPA/S1", to=e2.party)
        assert status == 403, answer

        page = await new_page(browser)
        await login(page, hub)
        await page.goto(hub.url + "/console/reach")
        blocked = page.locator("#reach-matrix td[data-from='NL:CPA'][data-to='DE:EMB']")
        await expect(blocked).to_have_class("reach-no")
        await expect(blocked).to_contain_text("no agreement between NL/CPA and DE/EMB covering sessions")
        await expect(page.locator("#reach-matrix td[data-from='NL:CPA'][data-to='DE:EMA']")).to_have_text("✓")
        await page.select_option("#reach-module", "tariffs")  # the agreement covers sessions and cdrs only
        await expect(page.locator("#reach-matrix")).to_have_attribute("data-module", "tariffs")
        await expect(page.locator("#reach-matrix td[data-from='NL:CPA'][data-to='DE:EMA']")).to_contain_text(
            "covers cdrs, sessions")
        await page.select_option("#reach-module", "sessions")

        await page.click("details.add-agreement summary")
        await page.fill("#agreement-a", "NL:CPA:CPO")
        await page.fill("#agreement-b", "DE:EMB:EMSP")
        await page.fill("#agreement-modules", "sessions")
        await page.click("#agreement-add")
        await expect(page.locator("#agreement-notice")).to_contain_text("added")
        await expect(blocked).to_have_text("✓")  # the matrix refreshes after the change
        status, _, answer = await c.call(hub.session, "GET", "sessions", "RECEIVER", "NL/CPA/S1", to=e2.party)
        assert status == 200, answer

        # Live status counts too: a suspended receiver is named as the reason.
        await hub.admin("POST", f"/admin/platforms/{hub.app[HUB_KEY].registry.by_party('DE', 'EMB')[0].id}/suspend")  # type: ignore[index]
        await page.reload()
        await expect(blocked).to_contain_text("receiver DE:EMB is suspended")
        added = [r for r in await audit_records(hub) if r.path == "/console/reach/agreements"]
        assert [(r.actor, r.from_party, r.to_party) for r in added] == [("console@127.0.0.1", "NL:CPA", "DE:EMB")]
    finally:
        await stop_hub(hub)
