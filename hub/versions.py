"""Versions module: the version list and the 2.2.1 version details (OCPI 2.2.1 version_information_endpoint)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub.access import authenticate
from hub.context import Hub, hub_of
from hub.envelope import ocpi_response
from hub.exchange import reply_headers
from routing.ocpi.models import MODULES

VERSION = "2.2.1"


def version_details(hub: Hub) -> dict[str, Any]:
    """Every functional module in both roles, each role on its own base URL (OCPI 2.2.1 versions, Endpoint URLs)."""
    base = hub.base_url
    endpoints: list[dict[str, str]] = [
        {"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"},
        # The hub owns the ClientInfo list: SENDER only; parties implement the RECEIVER (OCPI 2.2.1 hubclientinfo,
        # Sender interface).
        {"identifier": "hubclientinfo", "role": "SENDER", "url": f"{base}/hubclientinfo"},
    ]
    for module in MODULES:
        endpoints.append({"identifier": module, "role": "SENDER", "url": f"{base}/sender/{module}"})
        endpoints.append({"identifier": module, "role": "RECEIVER", "url": f"{base}/receiver/{module}"})
    return {"version": VERSION, "endpoints": endpoints}


async def get_versions(request: web.Request) -> web.Response:
    hub = hub_of(request)
    await authenticate(request, hub, allow_token_a=True)
    return ocpi_response([{"version": VERSION, "url": hub.base_url}], headers=reply_headers(request))


async def get_version_details(request: web.Request) -> web.Response:
    hub = hub_of(request)
    await authenticate(request, hub, allow_token_a=True)
    return ocpi_response(version_details(hub), headers=reply_headers(request))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ocpi/versions", get_versions)
    app.router.add_get(f"/ocpi/{VERSION}", get_version_details)
    app.router.add_get(f"/ocpi/{VERSION}/", get_version_details)
