"""Fake partner platforms: real aiohttp servers on loopback that speak OCPI 2.2.1 (default), 2.1.1 or 2.3.0 to the
hub.

A partner hosts parties, offers chosen module interfaces, records every request it receives, and answers
with a configurable responder. It can register with the hub (Token A → B → C) and call the hub with Token C.
A 2.1.1 partner (``version="2.1.1"``) is what OCPI 2.1.1 knows: one party, endpoints without roles at
``/ocpi/2.1.1/{module}``, the raw token in ``Authorization``, no routing headers and no request ids.
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
MODULES_211 = ("cdrs", "commands", "locations", "sessions", "tariffs", "tokens")
VERSIONS = ("2.3.0", "2.2.1", "2.1.1")  # newest first


def ocpi_token(token: str) -> str:
    return "Token " + base64.b64encode(token.encode()).decode()


def token_header(token: str, version: str) -> str:
    """OCPI 2.1.1 sends the token as is; 2.2 and later Base64-encode it."""
    return f"Token {token}" if version == "2.1.1" else ocpi_token(token)


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
    version: str = "2.2.1"  # the version it speaks best: where its modules live, how it sends its token
    offered_versions: tuple[str, ...] = ()  # its versions list; empty: (version,)
    hub_party_id: str | None = None  # sent in its 2.3.0 credentials when set
    connected_version: str | None = None  # the version it registered in with the hub (or the hub with it)
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
    offline: bool = False  # go_offline(): connections refused, requests on open connections cut off unanswered
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _serving_version: str = "2.2.1"  # version of the credentials call being answered

    @property
    def versions_url(self) -> str:
        return f"{self.base_url}/ocpi/versions"

    @property
    def offers(self) -> tuple[str, ...]:
        return self.offered_versions or (self.version,)

    def endpoint_path(self, module: str, role: str, version: str | None = None) -> str:
        """Path of the endpoint this partner advertises for a module and interface role (no trailing slash);
        2.1.1 has no roles: one path per module."""
        version = version or self.version
        if version == "2.1.1":
            return f"/ocpi/2.1.1/{module}"
        return f"/ocpi/{version}/{role.lower()}/{module}"

    def advertised_url(self, module: str, role: str, version: str | None = None) -> str:
        """The endpoint URL this partner advertises in its version details, exactly."""
        url = self.base_url + self.endpoint_path(module, role, version) + ("/" if self.trailing_slash else "")
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
        for version in VERSIONS:
            app.router.add_get(f"/ocpi/{version}", self._details)
            app.router.add_route("*", f"/ocpi/{version}/credentials", self._credentials)
        app.router.add_route("*", "/ocpi/2.1.1/{module}{tail:.*}", self._module)
        app.router.add_route("*", "/ocpi/{version:2\\.2\\.1|2\\.3\\.0}/{role}/{module}{tail:.*}", self._module)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def go_offline(self) -> None:
        """A partner whose server is down: new connections are refused, and a request arriving on a connection the
        hub kept open is cut off without an answer. Its routes, tokens and port stay for ``go_online``."""
        self.offline = True
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def go_online(self) -> None:
        """Listen again on the same port."""
        assert self._runner is not None, "start() first"
        self.offline = False
        if self._site is None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", URL(self.base_url).port or 0)
            await self._site.start()

    def _path_versions(self, request: web.Request) -> tuple[str, ...]:
        """The versions whose token encoding a request may use: its path's version, or any offered one."""
        part = request.path.split("/")[2] if request.path.count("/") >= 2 else ""
        return (part,) if part in VERSIONS else self.offers

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization")
        return any(given == token_header(self.token_b, v) for v in self._path_versions(request))

    def _token_a_used(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization")
        return self.token_a is not None and any(given == token_header(self.token_a, v)
                                                for v in self._path_versions(request))

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
                                           for v in self.offers]))

    async def _details(self, request: web.Request) -> web.Response:
        self.config_calls.append(await self._record(request))
        if not (self._authorized(request) or self._token_a_used(request)):
            return web.json_response(envelope(status_code=2000, message="bad token"), status=401)
        version = request.path.split("/")[2]
        if version not in self.offers:
            return web.json_response(envelope(status_code=2000, message="unknown version"), status=404)
        endpoints: list[dict[str, str]] = []
        if self.offer_credentials:
            endpoints.append({"identifier": "credentials", "role": "SENDER",
                              "url": f"{self.base_url}/ocpi/{version}/credentials"})
        for module, roles in self.modules.items():
            if version == "2.1.1":  # no roles: one endpoint per module; none of the 2.2 modules but those it invents
                if module in MODULES_211 or module not in ALL_MODULES:
                    endpoints.append({"identifier": module, "role": roles[0],
                                      "url": self.advertised_url(module, roles[0], version)})
                continue
            for role in roles:
                endpoints.append({"identifier": module, "role": role,
                                  "url": self.advertised_url(module, role, version)})
        if version == "2.1.1":
            for e in endpoints:
                del e["role"]
        return web.json_response(envelope({"version": version, "endpoints": endpoints}))

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
        if self.offline and request.transport is not None:
            request.transport.abort()  # what the hub sees of a server that went down: the connection is gone
            return web.Response(status=503)  # never written
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
        version = request.path.split("/")[2]
        if request.method == "GET":
            return web.json_response(envelope(self.credentials(version=version)))
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
        self._serving_version = version
        if not await self._read_sender(body["url"], body["token"]):
            return web.json_response(envelope(status_code=3001, message="unable to use the client's API"),
                                     status=400)
        self.hub_credentials = body
        self.token_c = body["token"]
        self.token_b = "C-" + secrets.token_hex(8)
        self.token_a = None  # returning the new token invalidates Token A
        self.connected_version = version
        return web.json_response(envelope(self.credentials(version=version)))

    async def _read_sender(self, versions_url: str, token: str) -> bool:
        """GET the sender's versions and its details, in the version whose credentials endpoint it called, with the
        token it sent; remembers its endpoints."""
        version = self._serving_version
        auth = {"Authorization": token_header(token, version)}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(versions_url, headers=auth) as resp:
                self.hub_callbacks.append((versions_url, token, resp.status))
                if resp.status != 200:
                    return False
                versions = (await resp.json())["data"]
            details_url = next((v["url"] for v in versions if v["version"] == version), None)
            if details_url is None:
                return False
            async with session.get(details_url, headers=auth) as resp:
                self.hub_callbacks.append((details_url, token, resp.status))
                if resp.status != 200:
                    return False
                endpoints = (await resp.json())["data"]["endpoints"]
        self.hub_endpoints = self._keyed(endpoints)
        return True

    @staticmethod
    def _keyed(endpoints: list[dict[str, str]]) -> dict[tuple[str, str], str]:
        """Endpoints by (module, role); a 2.1.1 endpoint has no role: it answers to either."""
        keyed: dict[tuple[str, str], str] = {}
        for e in endpoints:
            for role in ((e["role"],) if "role" in e else ("SENDER", "RECEIVER")):
                keyed[(e["identifier"], role)] = e["url"]
        return keyed

    # -- client side ------------------------------------------------------------------------------------
    def credentials(self, token: str | None = None, url: str | None = None,
                    version: str | None = None) -> dict[str, Any]:
        """Its credentials in ``version`` (default: the version it speaks): 2.1.1 carries its first party only."""
        version = version or self.version
        token, url = token or self.token_b, url or self.versions_url
        if version == "2.1.1":
            p = self.party
            return {"token": token, "url": url, "business_details": {"name": f"{self.name} {p.party_id}"},
                    "party_id": p.party_id, "country_code": p.country_code}
        creds: dict[str, Any] = {
            "token": token,
            "url": url,
            "roles": [{"role": p.role, "party_id": p.party_id, "country_code": p.country_code,
                       "business_details": {"name": f"{self.name} {p.party_id}"}} for p in self.parties],
        }
        if version == "2.3.0" and self.hub_party_id:
            creds["hub_party_id"] = self.hub_party_id
        return creds

    async def _hub_endpoints(self, session: aiohttp.ClientSession, hub_versions_url: str, token: str,
                             version: str | None) -> str:
        """Reads the hub's versions and, in ``version`` (default: the newest both offer), its endpoints."""
        async with session.get(hub_versions_url, headers={"Authorization": token_header(token, self.version)}) as resp:
            versions = {v["version"]: v["url"] for v in (await resp.json())["data"]}
        version = version or next(v for v in VERSIONS if v in versions and v in self.offers)
        auth = {"Authorization": token_header(token, version)}
        async with session.get(versions[version], headers=auth) as resp:
            endpoints = (await resp.json())["data"]["endpoints"]
        self.hub_endpoints = self._keyed(endpoints)
        return version

    async def register(self, session: aiohttp.ClientSession, hub_versions_url: str, token_a: str,
                       version: str | None = None) -> dict[str, Any]:
        """The credentials sender's side of registration (OCPI credentials, Registration steps 2–5, 8), in
        ``version`` or the newest version both sides offer."""
        version = await self._hub_endpoints(session, hub_versions_url, token_a, version)
        async with session.post(self.hub_endpoints[("credentials", "SENDER")], json=self.credentials(version=version),
                                headers={"Authorization": token_header(token_a, version)}) as resp:
            doc = await resp.json()
            assert resp.status == 200, doc
        self.token_c = doc["data"]["token"]
        self.connected_version = version
        return dict(doc)

    async def update(self, session: aiohttp.ClientSession, hub_versions_url: str,
                     version: str | None = None) -> tuple[int, dict[str, Any]]:
        """Credentials PUT to the hub in ``version`` (moves the registration there) with a fresh token of its own."""
        assert self.token_c is not None, "not registered"
        version = await self._hub_endpoints(session, hub_versions_url, self.token_c, version)
        old_b, self.token_b = self.token_b, "B-" + secrets.token_hex(8)
        async with session.put(self.hub_endpoints[("credentials", "SENDER")], json=self.credentials(version=version),
                               headers={"Authorization": token_header(self.token_c, version)}) as resp:
            doc = await resp.json()
        if resp.status == 200:
            self.token_c, self.connected_version = doc["data"]["token"], version
        else:
            self.token_b = old_b
        return resp.status, dict(doc)

    async def come_back_in(self, session: aiohttp.ClientSession, hub_versions_url: str, version: str) -> int:
        """A partner that was down (a failing responder) registers again in ``version`` (credentials PUT) and takes
        what comes from now on; how many requests it had received before."""
        self.version = version
        status, doc = await self.update(session, hub_versions_url, version)
        assert status == 200, doc
        tried = len(self.received)
        self.responder = default_responder
        return tried

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
        if (self.connected_version or self.version) == "2.1.1":  # no routing headers, no request ids, raw token
            h = {"Authorization": token_header(self.token_c or "", "2.1.1")}
        else:
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
