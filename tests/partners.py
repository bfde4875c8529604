"""Fake partner platforms: real aiohttp servers on loopback that speak OCPI 2.2.1 to the hub.

A partner hosts parties, offers chosen module interfaces, records every request it receives, and answers
with a configurable responder. It can register with the hub (Token A → B → C) and call the hub with Token C.
"""

from __future__ import annotations

import asyncio
import base64
import json as _json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

ALL_MODULES = ("cdrs", "chargingprofiles", "commands", "locations", "sessions", "tariffs", "tokens")


def ocpi_token(token: str) -> str:
    return "Token " + base64.b64encode(token.encode()).decode()


def envelope(data: Any = None, status_code: int = 1000, message: str = "Success") -> dict[str, Any]:
    body: dict[str, Any] = {"status_code": status_code, "status_message": message,
                            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if data is not None:
        body["data"] = data
    return body


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes
    time: float
    raw_path: str = ""  # as on the wire, percent-encoding kept: forwarding must not decode it
    raw_query: str = ""

    def json(self) -> Any:
        return _json.loads(self.body) if self.body else None


Responder = Callable[[web.Request, Received], Awaitable[web.StreamResponse]]


async def default_responder(request: web.Request, rec: Received) -> web.StreamResponse:
    headers = {}
    for src, dst in (("OCPI-from-country-code", "OCPI-to-country-code"), ("OCPI-from-party-id", "OCPI-to-party-id"),
                     ("OCPI-to-country-code", "OCPI-from-country-code"), ("OCPI-to-party-id", "OCPI-from-party-id")):
        if src in request.headers:
            headers[dst] = request.headers[src]
    for h in ("X-Request-ID", "X-Correlation-ID"):
        if h in request.headers:
            headers[h] = request.headers[h]
    data: Any = {"echo": rec.path}
    return web.json_response(envelope(data), headers=headers)


@dataclass
class Party:
    country_code: str
    party_id: str
    role: str

    @property
    def role_spec(self) -> str:
        return f"{self.country_code}:{self.party_id}:{self.role}"


@dataclass
class FakePartner:
    """One partner platform; ``modules`` maps module id to the interface roles it offers."""

    name: str
    parties: list[Party]
    modules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    token_b: str = field(default_factory=lambda: "B-" + secrets.token_hex(8))
    responder: Responder = default_responder
    versions_status: int = 200
    offer_credentials: bool = True
    trailing_slash: bool = False  # advertise endpoint URLs ending in "/": the hub must call them as given
    endpoint_urls: dict[tuple[str, str], str] = field(default_factory=dict)  # (module, role) -> URL advertised
    offered_versions: tuple[str, ...] = ("2.2.1",)
    versions_delay: float = 0.0  # seconds the versions endpoint waits: lets tests act mid-registration
    received: list[Received] = field(default_factory=list)
    config_calls: list[Received] = field(default_factory=list)  # GETs on versions and version details
    token_c: str | None = None
    hub_endpoints: dict[tuple[str, str], str] = field(default_factory=dict)
    base_url: str = ""
    # Credentials RECEIVER side (the hub registers with this partner, or updates its credentials here):
    token_a: str | None = None  # a Token A this partner issued; opens versions, details and credentials once
    credentials_calls: list[Received] = field(default_factory=list)  # requests on this partner's credentials
    hub_callbacks: list[tuple[str, str, int]] = field(default_factory=list)  # (url, token, HTTP status) it made
    hub_credentials: dict[str, Any] | None = None  # the hub's credentials object as last received
    _runner: web.AppRunner | None = None

    @property
    def versions_url(self) -> str:
        return f"{self.base_url}/ocpi/versions"

    @staticmethod
    def endpoint_path(module: str, role: str) -> str:
        """Path of the endpoint this partner advertises for a module and interface role (no trailing slash)."""
        return f"/ocpi/2.2.1/{role.lower()}/{module}"

    def advertised_url(self, module: str, role: str) -> str:
        """The endpoint URL this partner advertises in its version details, exactly."""
        url = self.base_url + self.endpoint_path(module, role) + ("/" if self.trailing_slash else "")
        return self.endpoint_urls.get((module, role), url)

    def served_path(self, module: str, role: str, tail: str = "") -> str:
        """The one path this partner serves for an endpoint (and an object below it): the advertised path as
        given, with exactly one '/' before ``tail``."""
        path = URL(self.advertised_url(module, role), encoded=True).raw_path
        return path + ("" if path.endswith("/") else "/") + tail if tail else path

    @property
    def party(self) -> Party:
        return self.parties[0]

    # -- server side ------------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ocpi/versions", self._versions)
        app.router.add_get("/ocpi/2.2.1", self._details)
        app.router.add_route("*", "/ocpi/2.2.1/credentials", self._credentials)
        app.router.add_route("*", "/ocpi/2.2.1/{role}/{module}{tail:.*}", self._module)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == ocpi_token(self.token_b)

    def _token_a_used(self, request: web.Request) -> bool:
        return self.token_a is not None and request.headers.get("Authorization") == ocpi_token(self.token_a)

    async def _record(self, request: web.Request) -> Received:
        return Received(method=request.method, path=request.path, query=request.query_string,
                        headers=CIMultiDict(request.headers), body=await request.read(),
                        time=asyncio.get_running_loop().time(), raw_path=request.rel_url.raw_path,
                        raw_query=request.rel_url.raw_query_string)

    async def _versions(self, request: web.Request) -> web.Response:
        self.config_calls.append(await self._record(request))
        if self.versions_delay:
            await asyncio.sleep(self.versions_delay)
        if not (self._authorized(request) or self._token_a_used(request)):
            return web.json_response(envelope(status_code=2000, message="bad token"), status=401)
        if self.versions_status != 200:
            return web.Response(status=self.versions_status, text="down for maintenance")
        return web.json_response(envelope([{"version": v, "url": f"{self.base_url}/ocpi/{v}"}
                                           for v in self.offered_versions]))

    async def _details(self, request: web.Request) -> web.Response:
        self.config_calls.append(await self._record(request))
        if not (self._authorized(request) or self._token_a_used(request)):
            return web.json_response(envelope(status_code=2000, message="bad token"), status=401)
        endpoints = []
        if self.offer_credentials:
            endpoints.append({"identifier": "credentials", "role": "SENDER",
                              "url": f"{self.base_url}/ocpi/2.2.1/credentials"})
        for module, roles in self.modules.items():
            for role in roles:
                endpoints.append({"identifier": module, "role": role, "url": self.advertised_url(module, role)})
        return web.json_response(envelope({"version": "2.2.1", "endpoints": endpoints}))

    def _misrouted(self, raw_path: str) -> web.StreamResponse | None:
        """Strict like FastAPI and similar stacks: an advertised endpoint is served on exactly its advertised path
        (the other trailing-slash form is redirected with 307, which the hub must not need), and a path below it
        only after exactly one '/' (404 otherwise). Other paths (callback URLs this partner handed over) pass."""
        if "//" in raw_path:
            return web.Response(status=404, text="404: Not Found")
        for module, roles in self.modules.items():
            for role in roles:
                url = self.advertised_url(module, role)
                if not url.startswith(self.base_url + "/"):
                    continue
                served = URL(url, encoded=True).raw_path
                if raw_path.rstrip("/") == served.rstrip("/") and raw_path != served:
                    raise web.HTTPTemporaryRedirect(url)  # 307, as FastAPI's redirect_slashes
        return None

    async def _module(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        self.received.append(rec)
        if (wrong := self._misrouted(rec.raw_path)) is not None:
            return wrong
        if not self._authorized(request):
            return web.json_response(envelope(status_code=2000, message="bad token"), status=401)
        return await self.responder(request, rec)

    async def _credentials(self, request: web.Request) -> web.Response:
        """Credentials RECEIVER (OCPI 2.2.1 credentials, Registration steps 6–7): POST with Token A, PUT/GET/DELETE
        with the current token.

        On POST and PUT it reads the sender's versions and details with the token in the body before answering,
        then keeps that token for its own calls (``token_c``) and issues a fresh one for the sender (``token_b``).
        """
        rec = await self._record(request)
        self.credentials_calls.append(rec)
        with_a, with_current = self._token_a_used(request), self._authorized(request)
        if not (with_a or with_current):
            return web.json_response(envelope(status_code=2000, message="bad token"), status=401)
        if request.method == "GET":
            return web.json_response(envelope(self.credentials()))
        if request.method == "DELETE":
            if not with_current:
                return web.json_response(envelope(status_code=2000, message="not registered"), status=405)
            self.token_c, self.token_b = None, "B-" + secrets.token_hex(8)
            return web.json_response(envelope())
        if request.method not in ("POST", "PUT"):
            return web.json_response(envelope(status_code=2000, message="method not allowed"), status=405)
        if (request.method == "POST") != with_a:
            message = "use PUT to update" if request.method == "POST" else "not registered: POST first"
            return web.json_response(envelope(status_code=2000, message=message), status=405)
        body = rec.json()
        if not await self._read_sender(body["url"], body["token"]):
            return web.json_response(envelope(status_code=3001, message="unable to use the client's API"),
                                     status=400)
        self.hub_credentials = body
        self.token_c = body["token"]
        self.token_b = "C-" + secrets.token_hex(8)
        self.token_a = None  # returning the new token invalidates Token A
        return web.json_response(envelope(self.credentials()))

    async def _read_sender(self, versions_url: str, token: str) -> bool:
        """GET the sender's versions and 2.2.1 details with the token it sent; remembers its endpoints."""
        auth = {"Authorization": ocpi_token(token)}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(versions_url, headers=auth) as resp:
                self.hub_callbacks.append((versions_url, token, resp.status))
                if resp.status != 200:
                    return False
                versions = (await resp.json())["data"]
            details_url = next((v["url"] for v in versions if v["version"] == "2.2.1"), None)
            if details_url is None:
                return False
            async with session.get(details_url, headers=auth) as resp:
                self.hub_callbacks.append((details_url, token, resp.status))
                if resp.status != 200:
                    return False
                endpoints = (await resp.json())["data"]["endpoints"]
        self.hub_endpoints = {(e["identifier"], e["role"]): e["url"] for e in endpoints}
        return True

    # -- client side ------------------------------------------------------------------------------------
    def credentials(self, token: str | None = None, url: str | None = None) -> dict[str, Any]:
        return {
            "token": token or self.token_b,
            "url": url or self.versions_url,
            "roles": [{"role": p.role, "party_id": p.party_id, "country_code": p.country_code,
                       "business_details": {"name": f"{self.name} {p.party_id}"}} for p in self.parties],
        }

    async def register(self, session: aiohttp.ClientSession, hub_versions_url: str, token_a: str) -> dict[str, Any]:
        """The credentials sender's side of registration (OCPI 2.2.1 credentials, Registration steps 2–5, 8)."""
        auth = {"Authorization": ocpi_token(token_a)}
        async with session.get(hub_versions_url, headers=auth) as resp:
            versions = (await resp.json())["data"]
        details_url = next(v["url"] for v in versions if v["version"] == "2.2.1")
        async with session.get(details_url, headers=auth) as resp:
            endpoints = (await resp.json())["data"]["endpoints"]
        self.hub_endpoints = {(e["identifier"], e["role"]): e["url"] for e in endpoints}
        async with session.post(self.hub_endpoints[("credentials", "SENDER")], json=self.credentials(),
                                headers=auth) as resp:
            doc = await resp.json()
            assert resp.status == 200, doc
        self.token_c = doc["data"]["token"]
        return dict(doc)

    def hub_url(self, module: str, role: str, tail: str = "") -> str:
        base = self.hub_endpoints[(module, role)]
        return base + ("/" + tail.lstrip("/") if tail else "")

    async def call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        module: str,
        role: str,
        tail: str = "",
        *,
        to: Party | None = None,
        from_: Party | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> tuple[int, CIMultiDict[str], Any]:
        """Send one request to the hub as this partner; returns status, headers, parsed JSON (or text)."""
        status, resp_headers, raw = await self.call_raw(session, method, module, role, tail, to=to, from_=from_,
                                                        json=json, data=data, headers=headers, query=query)
        try:
            body: Any = _json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        return status, resp_headers, body

    async def call_raw(
        self,
        session: aiohttp.ClientSession,
        method: str,
        module: str,
        role: str,
        tail: str = "",
        *,
        to: Party | None = None,
        from_: Party | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        query: str = "",
        encoded: bool = False,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """Like ``call`` but the body comes back as bytes; ``encoded=True`` sends tail and query byte for byte."""
        sender = from_ or self.party
        h = {"Authorization": ocpi_token(self.token_c or ""),
             "X-Request-ID": uuid.uuid4().hex, "X-Correlation-ID": uuid.uuid4().hex,
             "OCPI-from-country-code": sender.country_code, "OCPI-from-party-id": sender.party_id}
        if to is not None:
            h["OCPI-to-country-code"], h["OCPI-to-party-id"] = to.country_code, to.party_id
        h.update(headers or {})
        url = self.hub_url(module, role, tail) + (f"?{query}" if query else "")
        target: str | URL = URL(url, encoded=True) if encoded else url
        async with session.request(method, target, json=json, data=data, headers=h) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()
