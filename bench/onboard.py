"""Onboard the two benchmark platforms the way an operator and a partner do: admin API, then Token A → B → C.

The receiver platform is the ``receiver.py`` process; the sender platform is a tiny in-process server that
only serves versions and version details for the handshake (the load generator then calls with its Token C).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from common import LOOPBACK, envelope, free_port, ocpi_token

Role = tuple[str, str, str]  # country_code, party_id, role

RECEIVER_PARTIES: list[Role] = [("NL", "CPR", "CPO"), ("DE", "EMR", "EMSP")]
SENDER_PARTIES: list[Role] = [("NL", "CPA", "CPO"), ("DE", "EMA", "EMSP")]
# A CPO registered in OCPI 2.3.0: its PUTs to the 2.2.1 receiver are translated by the hub (the bridged scenario).
SENDER_230_PARTIES: list[Role] = [("NL", "CPB", "CPO")]
# A second platform on the bench receiver, opted in for store-and-forward of locations (the stored scenario).
STORED_PARTIES: list[Role] = [("DE", "EMS", "EMSP")]
VERSIONS = ("2.2.1", "2.3.0")
# Roaming agreements of the --agreements hub: the GET (eMSP DE/EMA asks CPO NL/CPR) and the PUT (CPO NL/CPA pushes
# to eMSP DE/EMR), each covering locations, plus a few the routed requests never use (the book holds more than one).
AGREEMENTS: list[tuple[str, str, list[str]]] = [
    ("DE:EMA:EMSP", "NL:CPR:CPO", ["locations"]),
    ("NL:CPA:CPO", "DE:EMR:EMSP", ["locations"]),
    ("NL:CPA:CPO", "DE:EMA:EMSP", ["sessions", "cdrs"]),
    ("NL:CPR:CPO", "DE:EMR:EMSP", ["*"]),
]


@dataclass
class Registration:
    """A platform as the hub knows it after the handshake."""

    name: str
    platform_id: str
    token_c: str
    hub_endpoints: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def auth(self) -> str:
        return ocpi_token(self.token_c)


class SenderPlatform:
    """Versions and version details of the sender, served from the bench process during registration."""

    def __init__(self) -> None:
        self.token_b = "B-" + secrets.token_hex(12)
        self.token_b_230 = "B-" + secrets.token_hex(12)  # the 2.3.0 CPO is another platform: its own token
        self.port = free_port()
        self.root = f"http://{LOOPBACK}:{self.port}/ocpi"
        self._runner: web.AppRunner | None = None

    @property
    def versions_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/ocpi/versions"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ocpi/versions", self._versions)
        for version in VERSIONS:
            app.router.add_get(f"/ocpi/{version}", self._details)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _ok(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") in (ocpi_token(self.token_b), ocpi_token(self.token_b_230))

    async def _versions(self, request: web.Request) -> web.Response:
        if not self._ok(request):
            return web.Response(status=401, body=envelope(status_code=2000, message="bad token"))
        return web.Response(body=envelope([{"version": v, "url": f"{self.root}/{v}"} for v in VERSIONS]),
                            content_type="application/json")

    async def _details(self, request: web.Request) -> web.Response:
        if not self._ok(request):
            return web.Response(status=401, body=envelope(status_code=2000, message="bad token"))
        version = request.path.rsplit("/", 1)[1]
        base = f"{self.root}/{version}"
        endpoints = [{"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"},
                     {"identifier": "locations", "role": "SENDER", "url": f"{base}/sender/locations"}]
        return web.Response(body=envelope({"version": version, "endpoints": endpoints}),
                            content_type="application/json")


async def _data(resp: aiohttp.ClientResponse, what: str) -> Any:
    doc = await resp.json(content_type=None)
    if resp.status >= 300 or not isinstance(doc, dict):
        raise RuntimeError(f"{what}: HTTP {resp.status} {doc}")
    return doc


async def connect(session: aiohttp.ClientSession, hub_url: str, admin_token: str, name: str, parties: list[Role],
                  partner_versions_url: str, token_b: str, version: str = "2.2.1") -> Registration:
    """Admin POST /admin/platforms (→ Token A), then the partner's side of the credentials handshake, in
    ``version``."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    roles = [{"country_code": cc, "party_id": pid, "role": role} for cc, pid, role in parties]
    async with session.post(f"{hub_url}/admin/platforms", json={"name": name, "roles": roles}, headers=admin) as r:
        platform = await _data(r, f"onboarding {name}")
    auth = {"Authorization": ocpi_token(platform["token_a"])}
    async with session.get(platform["versions_url"], headers=auth) as r:
        versions = (await _data(r, "GET hub versions"))["data"]
    details_url = next(v["url"] for v in versions if v["version"] == version)
    async with session.get(details_url, headers=auth) as r:
        endpoints = (await _data(r, "GET hub version details"))["data"]["endpoints"]
    hub_endpoints = {(e["identifier"], e["role"]): e["url"] for e in endpoints}
    creds = {"token": token_b, "url": partner_versions_url,
             "roles": [{"role": role, "party_id": pid, "country_code": cc,
                        "business_details": {"name": f"{name} {pid}"}} for cc, pid, role in parties]}
    async with session.post(hub_endpoints[("credentials", "SENDER")], json=creds, headers=auth) as r:
        doc = await _data(r, f"credentials POST of {name}")
    if doc.get("status_code") != 1000:
        raise RuntimeError(f"credentials POST of {name} refused: {doc}")
    return Registration(name=name, platform_id=platform["id"], token_c=doc["data"]["token"],
                        hub_endpoints=hub_endpoints)


async def agree(session: aiohttp.ClientSession, hub_url: str, admin_token: str,
                agreements: list[tuple[str, str, list[str]]]) -> None:
    """Add roaming agreements through the admin API."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    for party_a, party_b, modules in agreements:
        body = {"party_a": party_a, "party_b": party_b, "modules": modules}
        async with session.post(f"{hub_url}/admin/agreements", json=body, headers=admin) as r:
            await _data(r, f"agreement {party_a} - {party_b}")


async def store_and_forward(session: aiohttp.ClientSession, hub_url: str, admin_token: str, platform_id: str,
                            modules: list[str]) -> None:
    """Opt a platform in for store-and-forward of ``modules`` (docs/store-and-forward.md)."""
    async with session.put(f"{hub_url}/admin/platforms/{platform_id}/store-and-forward", json={"modules": modules},
                           headers={"Authorization": f"Bearer {admin_token}"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"store-and-forward opt-in: HTTP {resp.status} {await resp.text()}")
