"""Helpers of the console tests: a logged-in HTTP client session without a browser, and the audit records."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hub.audit import AuditQuery, AuditRecord
from hub.context import HUB_KEY
from tests.conftest import ADMIN_TOKEN, HubHarness

COOKIE = "ocpi_hub_console"
FORM_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Console:
    """One browser's worth of console state, kept by hand: aiohttp's cookie jar keeps no cookie for a bare IP
    address and sends no Secure cookie over http, both of which a browser does on loopback."""

    hub: HubHarness
    cookie: str = ""
    csrf: str = ""
    set_cookies: list[str] = field(default_factory=list)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**({"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}), **(extra or {})}

    def _keep(self, resp: aiohttp.ClientResponse) -> None:
        for header in resp.headers.getall("Set-Cookie", []):
            self.set_cookies.append(header)
            name, _, rest = header.partition("=")
            if name == COOKIE:
                self.cookie = rest.split(";")[0].strip('"')

    async def request(self, method: str, path: str, *, data: Any = None, headers: dict[str, str] | None = None,
                      ) -> tuple[int, dict[str, str], str]:
        async with self.hub.session.request(method, self.hub.url + path, data=data, headers=self.headers(headers),
                                            allow_redirects=False) as resp:
            self._keep(resp)
            return resp.status, dict(resp.headers), await resp.text()

    async def login_form(self) -> str:
        status, _, page = await self.request("GET", "/console/login")
        assert status == 200
        match = FORM_TOKEN.search(page)
        assert match is not None
        return match.group(1)

    async def login(self, token: str = ADMIN_TOKEN) -> tuple[int, dict[str, str], str]:
        form_token = await self.login_form()
        result = await self.request("POST", "/console/login", data={"token": token, "csrf_token": form_token,
                                                                    "next": "/console/partners"})
        if result[0] == 303:
            status, _, page = await self.request("GET", "/console/partners")
            assert status == 200
            match = FORM_TOKEN.search(page)
            assert match is not None
            self.csrf = match.group(1)
        return result


async def audit_records(hub: HubHarness, **filters: Any) -> list[AuditRecord]:
    h = hub.app[HUB_KEY]
    await h.audit.flush()
    return await h.store.query_audit(AuditQuery(module="admin", limit=1000, **filters))
