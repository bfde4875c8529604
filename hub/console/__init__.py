"""The operator console at ``/console``: server-rendered pages (Jinja2) made live with htmx, served by the hub
itself with its vendored scripts, behind a login with the admin token (docs/console.md).

A sub-application: its middlewares (errors, session, login and CSRF guard) run for console requests only, never
on the OCPI routing path.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from hub.console import auth, insights, messages, partners, reach, render, session, tail

STATIC = Path(__file__).parent / "static"


def console_app() -> web.Application:
    app = web.Application(middlewares=[auth.errors, session.session_layer, auth.guard])
    render.setup(app)
    session.install(app)
    app.router.add_get("/login", auth.login_page)
    app.router.add_post("/login", auth.login)
    app.router.add_post("/logout", auth.logout)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.router.add_get("/", _home)
    partners.add_routes(app)
    messages.add_routes(app)
    tail.add_routes(app)
    insights.add_routes(app)
    reach.add_routes(app)
    return app


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(auth.HOME)


def add_console(app: web.Application) -> None:
    app.router.add_get("/console", _home)
    app.add_subapp("/console", console_app())
