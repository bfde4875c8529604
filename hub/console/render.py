"""Templates (Jinja2 through aiohttp-jinja2, autoescaped) and the headers every console answer carries."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hub.console.session import CSRF_HEADER, Operator, hub_from

OPERATOR = web.RequestKey("console_operator", Operator)

# Scripts and styles only from the hub itself (no inline script, no eval: htmx runs with allowEval off).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: that makes a browser send "Origin: null" on our own forms
}
NO_STORE: Final = {"Cache-Control": "no-store"}


def ago(unix: float | None) -> str:
    """"12 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" without a time."""
    if not unix:
        return "never"
    seconds = max(0.0, time.time() - unix)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def when(value: datetime | float | None) -> str:
    if value is None:
        return ""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("hub.console", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = ago
    env.filters["when"] = when


def render(request: web.Request, template: str, context: dict[str, Any] | None = None, *,
           status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    operator = request.get(OPERATOR)
    base: dict[str, Any] = {
        "hub_name": hub_from(request).settings.hub_name,
        "operator": operator,
        "csrf": getattr(operator, "csrf", ""),
        "csrf_header": CSRF_HEADER,
        "path": request.path,
    }
    response = aiohttp_jinja2.render_template(template, request, {**base, **(context or {})}, status=status)
    response.headers.update(NO_STORE)
    if headers:
        response.headers.update(headers)
    return response


def htmx(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"
