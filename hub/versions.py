"""Versions module: the version list and the version details of every OCPI version the hub speaks (OCPI 2.1.1,
2.2.1 and 2.3.0 version_information_endpoint; docs/versions.md, "Versions and registration")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub.access import authenticate
from hub.context import Hub, hub_of
from hub.envelope import ocpi_response
from hub.exchange import reply_headers
from routing.ocpi.versions import HAS_HUBCLIENTINFO, MODULES_211, SUPPORTED, V211, V221, modules_of


def version_details(hub: Hub, version: str = V221) -> dict[str, Any]:
    """The hub's endpoints in ``version``.

    2.2.1 and 2.3.0: every functional module of the version in both roles, each role on its own base URL (OCPI
    2.2.1 versions, Endpoint URLs), plus credentials and the hub's hubclientinfo SENDER interface.
    2.1.1: endpoints have no role, so one URL per module; the hub plays whichever side the caller's role needs.
    """
    base = hub.version_url(version)
    if version == V211:
        return {"version": version, "endpoints": [
            {"identifier": "credentials", "url": f"{base}/credentials"},
            *({"identifier": module, "url": f"{base}/{module}"} for module in MODULES_211),
        ]}
    endpoints: list[dict[str, str]] = [{"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"}]
    if version in HAS_HUBCLIENTINFO:
        # The hub owns the ClientInfo list: SENDER only; parties implement the RECEIVER (OCPI 2.2.1 hubclientinfo,
        # Sender interface).
        endpoints.append({"identifier": "hubclientinfo", "role": "SENDER", "url": f"{base}/hubclientinfo"})
    for module in modules_of(version):
        endpoints.append({"identifier": module, "role": "SENDER", "url": f"{base}/sender/{module}"})
        endpoints.append({"identifier": module, "role": "RECEIVER", "url": f"{base}/receiver/{module}"})
    return {"version": version, "endpoints": endpoints}


async def get_versions(request: web.Request) -> web.Response:
    hub = hub_of(request)
    await authenticate(request, hub, allow_token_a=True)
    listed = [{"version": version, "url": hub.version_url(version)} for version in SUPPORTED]
    return ocpi_response(listed, headers=reply_headers(request))


async def get_version_details(request: web.Request) -> web.Response:
    hub = hub_of(request)
    await authenticate(request, hub, allow_token_a=True)
    version = request.path.split("/")[2]
    return ocpi_response(version_details(hub, version), headers=reply_headers(request))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ocpi/versions", get_versions)
    for version in SUPPORTED:
        app.router.add_get(f"/ocpi/{version}", get_version_details)
        app.router.add_get(f"/ocpi/{version}/", get_version_details)
