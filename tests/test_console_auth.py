"""The console's login, session cookie and CSRF guard over plain HTTP (no browser): docs/console.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from hub.context import HUB_KEY
from routing.platform import ConnectionStatus
from tests.conftest import ADMIN_TOKEN, HubHarness, cpo, hub_settings, start_hub, stop_hub
from tests.console_helpers import COOKIE, Console, audit_records
from tests.rawhttp import raw_request


@pytest.fixture
async def hub() -> AsyncIterator[HubHarness]:
    h = await start_hub(hub_settings(console_session_minutes=0.05))  # 3 s: long enough for a test, then it ends
    try:
        yield h
    finally:
        await stop_hub(h)


async def test_pages_need_a_login_and_the_cookie_has_every_flag(hub: HubHarness) -> None:
    console = Console(hub)
    status, headers, _ = await console.request("GET", "/console/messages?module=cdrs")
    location = URL(headers["Location"])
    assert status == 303 and location.path == "/console/login"
    assert location.query["next"] == "/console/messages?module=cdrs"
    status, _, _ = await console.login()
    assert status == 303
    session_cookie = next(c for c in console.set_cookies[1:] if c.startswith(COOKIE + "="))
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in session_cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= set(flags)
    assert flags["samesite"] == "SameSite=Strict" and flags["path"] == "Path=/console"
    assert flags["max-age"] == "Max-Age=3"
    status, headers, page = await console.request("GET", "/console/partners")
    assert status == 200 and "Partners" in page
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    # Static files need no session (nothing secret in them).
    status, _, script = await Console(hub).request("GET", "/console/static/htmx.min.js")
    assert status == 200 and "htmx" in script


async def test_a_wrong_token_is_refused_and_audited_like_a_failed_admin_login(hub: HubHarness) -> None:
    console = Console(hub)
    status, _, page = await console.login("not-the-admin-token-at-all-0000")
    assert status == 401 and "not the hub" in page
    status, _, _ = await console.request("GET", "/console/partners")
    assert status == 303  # still no session
    (record,) = await audit_records(hub, outcome="unauthorized")
    assert record.actor == "unauthenticated@127.0.0.1" and record.path == "/console/login"
    assert record.http_status == 401


async def test_a_forged_login_without_the_forms_token_is_refused(hub: HubHarness) -> None:
    console = Console(hub)
    status, _, _ = await console.request("POST", "/console/login", data={"token": ADMIN_TOKEN})
    assert status == 403
    assert console.cookie == "" or (await console.request("GET", "/console/partners"))[0] == 303
    (record,) = await audit_records(hub, outcome="unauthorized")
    assert record.path == "/console/login" and record.http_status == 403  # what the caller was answered


async def test_a_login_form_that_cannot_be_read_is_400_not_a_server_error(hub: HubHarness) -> None:
    """Anyone who reaches the login page can post any body: bytes that are not UTF-8, a multipart body without a
    boundary or with a non-UTF-8 field. aiohttp's form parser raises on them; that was a 500 and a traceback."""
    console = Console(hub)
    form_token = await console.login_form()
    for content_type, body in (
            ("application/x-www-form-urlencoded", b"token=\xff\xfe&csrf_token=" + form_token.encode()),
            ("multipart/form-data", b"no boundary"),
            ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="token"\r\n\r\n\xff\r\n'
                                                b"--x--\r\n")):
        status, _, _ = await console.request("POST", "/console/login", data=body,
                                             headers={"Content-Type": content_type})
        assert status == 400, (content_type, body)
    assert (await console.login())[0] == 303  # the form itself still works


async def test_a_csrf_token_with_non_utf8_bytes_is_refused_not_a_server_error(hub: HubHarness) -> None:
    """A header byte that is not UTF-8 reaches the hub as a lone surrogate; the CSRF check could not encode it."""
    platform = await hub.connect(cpo())
    console = Console(hub)
    await console.login()
    status, _, _ = await raw_request(hub.settings.host, hub.settings.port, "POST",
                                     f"/console/partners/{platform['id']}/suspend",
                                     {"Cookie": f"{COOKIE}={console.cookie}", "X-CSRF-Token": b"\xff\xfe"})
    assert status == 403
    registry = hub.app[HUB_KEY].registry
    assert registry.get(platform["id"]).status == ConnectionStatus.CONNECTED  # type: ignore[union-attr]


async def test_every_change_needs_the_sessions_csrf_token_and_the_same_origin(hub: HubHarness) -> None:
    partner = cpo()
    platform = await hub.connect(partner)
    console = Console(hub)
    await console.login()
    suspend = f"/console/partners/{platform['id']}/suspend"
    registry = hub.app[HUB_KEY].registry

    for headers, data in (({}, None), ({"X-CSRF-Token": "forged"}, None), ({}, {"csrf_token": "forged"}),
                          ({"X-CSRF-Token": console.csrf, "Origin": "http://evil.example"}, None),
                          ({"X-CSRF-Token": console.csrf, "Sec-Fetch-Site": "cross-site"}, None)):
        status, _, page = await console.request("POST", suspend, headers=headers, data=data)
        assert status == 403 and "CSRF" in page, headers
        assert registry.get(platform["id"]).status == ConnectionStatus.CONNECTED  # type: ignore[union-attr]
    refused = await audit_records(hub, outcome="rejected")
    assert len(refused) == 5 and {r.actor for r in refused} == {"console@127.0.0.1"}
    assert {r.platform_id for r in refused} == {platform["id"]}

    # The token as a form field (a plain form) or as the header htmx sends: the change is made and audited.
    status, _, _ = await console.request("POST", suspend, data={"csrf_token": console.csrf})
    assert status == 200
    assert registry.get(platform["id"]).status == ConnectionStatus.SUSPENDED  # type: ignore[union-attr]
    status, _, _ = await console.request("POST", f"/console/partners/{platform['id']}/resume",
                                         headers={"X-CSRF-Token": console.csrf, "HX-Request": "true",
                                                  "Origin": hub.url})
    assert status == 200
    assert registry.get(platform["id"]).status == ConnectionStatus.CONNECTED  # type: ignore[union-attr]
    done = [r for r in await audit_records(hub, outcome="ok") if r.path.startswith("/console/partners/")]
    assert sorted(r.path.rsplit("/", 1)[1] for r in done) == ["resume", "suspend"]
    assert all(r.actor == "console@127.0.0.1" and r.platform_id == platform["id"] for r in done)


async def test_a_change_without_a_session_is_refused_and_audited(hub: HubHarness) -> None:
    platform = await hub.connect(cpo())
    status, _, _ = await Console(hub).request("POST", f"/console/partners/{platform['id']}/remove")
    assert status == 401
    assert not hub.app[HUB_KEY].registry.get(platform["id"]).removed  # type: ignore[union-attr]
    (record,) = await audit_records(hub, outcome="unauthorized")
    assert record.path == f"/console/partners/{platform['id']}/remove"


async def test_the_session_ends_at_its_time_and_a_tampered_cookie_opens_nothing(hub: HubHarness) -> None:
    console = Console(hub)
    await console.login()
    assert (await console.request("GET", "/console/partners"))[0] == 200
    tampered = Console(hub, cookie=console.cookie[:-6] + "AAAAAA")
    assert (await tampered.request("GET", "/console/partners"))[0] == 303
    await asyncio.sleep(3.2)
    status, headers, _ = await console.request("GET", "/console/partners")
    assert status == 303 and "expired=1" in headers["Location"]
    status, headers, _ = await console.request("GET", "/console/partners/table", headers={"HX-Request": "true"})
    assert status == 401 and headers["HX-Redirect"].startswith("/console/login?")


async def test_logout_ends_the_session_for_every_copy_of_the_cookie(hub: HubHarness) -> None:
    console = Console(hub)
    await console.login()
    copy = Console(hub, cookie=console.cookie)
    status, headers, _ = await console.request("POST", "/console/logout", data={"csrf_token": console.csrf})
    assert status == 303 and headers["Location"].startswith("/console/login")
    assert (await copy.request("GET", "/console/partners"))[0] == 303


async def test_downloads_and_actions_are_audited_with_the_console_actor(hub: HubHarness) -> None:
    console = Console(hub)
    await console.login()
    status, headers, text = await console.request("GET", "/console/insights.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert text.splitlines()[0] == "day,from_party,to_party,module,currency,count,kwh,cost_excl_vat"
    records = await audit_records(hub)
    assert {(r.method, r.path.split("?")[0], r.actor) for r in records} >= {
        ("POST", "/console/login", "console@127.0.0.1"), ("GET", "/console/insights.csv", "console@127.0.0.1")}


async def test_the_console_can_be_turned_off() -> None:
    h = await start_hub(hub_settings(console=False))
    try:
        assert (await Console(h).request("GET", "/console/login"))[0] == 404
    finally:
        await stop_hub(h)
