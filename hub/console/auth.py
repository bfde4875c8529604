"""Who may use the console and what is recorded: login with the admin token, a session cookie, CSRF checks on
every state-changing request, and an audit record of every action (actor ``console@<address>``).

Failed logins go through the admin API's throttled recorder (hub/admin_audit.py), so guessing at the token from
the console floods the audit store no more than guessing at it on /admin does.
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import quote, urlsplit

from aiohttp import web
from yarl import URL

from hub.admin import FAILED_LOGINS
from hub.admin_audit import MUTATING, client_address, record_action
from hub.audit import outcome_of
from hub.console.render import OPERATOR, SECURITY_HEADERS, htmx, render
from hub.console.session import (
    COOKIE_NAME,
    CSRF_FIELD,
    CSRF_HEADER,
    end,
    hub_from,
    login_form_token,
    operator_of,
    read_form,
    same,
    start,
)
from hub.envelope import Handler, printable_message
from routing.ocpi.errors import OcpiError

HOME: Final = "/console/partners"
LOGIN: Final = "/console/login"
LOOPBACK: Final = frozenset(("127.0.0.1", "localhost", "::1", "[::1]"))
CROSS_SITE: Final = frozenset(("cross-site", "same-site"))


def actor_of(request: web.Request) -> str:
    return f"console@{client_address(request)}"


def _safe_next(value: str | None) -> str:
    """Only a console path: never a redirect off the hub (``//host`` or a scheme)."""
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value:
        return value
    return HOME


def _forged_origin(request: web.Request) -> bool:
    """A state-changing request a browser says came from another site (defence in depth beside the token)."""
    if request.headers.get("Sec-Fetch-Site", "") in CROSS_SITE:
        return True
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.host


async def _csrf_given(request: web.Request) -> str | None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await read_form(request)).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given


def _to_login(request: web.Request) -> web.StreamResponse:
    """To the login page, back to where the operator was afterwards. A fragment request (htmx) comes from a page
    that was open with a session: that session ended (its cookie may be gone already, Max-Age = its length)."""
    if htmx(request):
        page = URL(request.headers.get("HX-Current-URL", HOME))
        back = page.path_qs if page.path.startswith("/console/") and (not page.host or page.host == request.url.host) \
            else HOME
        target = f"{LOGIN}?expired=1&next={quote(back, safe='')}"
        return web.Response(status=401, headers={"HX-Redirect": target, **SECURITY_HEADERS})
    reason = "expired" if COOKIE_NAME in request.cookies else "login"
    if request.method != "GET" or request.headers.get("Accept", "").startswith("text/event-stream"):
        return web.Response(status=401, text="log in first", headers=SECURITY_HEADERS)
    raise web.HTTPSeeOther(f"{LOGIN}?{reason}=1&next={quote(request.path_qs, safe='')}", headers=SECURITY_HEADERS)


def _platform_of(request: web.Request) -> str | None:
    return request.match_info.get("id") if request.path.startswith("/console/partners/") else None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session required (but on the login page and static files); CSRF token and same origin on every POST,
    PUT, PATCH and DELETE; an audit record of every action and download."""
    if request.path.startswith("/console/static/") or request.path == LOGIN:
        return await handler(request)
    started = time.perf_counter()
    hub = hub_from(request)
    operator = await operator_of(request)
    if operator is None:
        if request.method in MUTATING:  # a change without a login: counted and recorded like a failed login
            request.config_dict[FAILED_LOGINS].failed(request, started)
        return _to_login(request)
    request[OPERATOR] = operator
    audited = request.method in MUTATING or request.path.endswith(".csv")
    if not audited:
        return await handler(request)
    actor = actor_of(request)
    if request.method in MUTATING and (_forged_origin(request) or not same(await _csrf_given(request),
                                                                          operator.csrf)):
        record_action(hub, request, actor, 403, _platform_of(request), started, "rejected")
        return render(request, "error.html", {"message": "refused: the request carries no valid CSRF token or "
                                                         "comes from another site; reload the page"}, status=403)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except OcpiError as exc:
        status = exc.http_status
        raise
    finally:
        record_action(hub, request, actor, status, _platform_of(request), started, outcome_of(status, None))


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals of an action (409, 404, 502 from a partner) as a message on the page; security headers always."""
    try:
        response = await handler(request)
    except OcpiError as exc:
        message = printable_message(exc.message)
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"} if htmx(request) else None
        response = render(request, "error.html", {"message": message}, status=exc.http_status, headers=headers)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def _insecure(request: web.Request) -> bool:
    """Plain http to a host that is not loopback: the browser will drop the Secure cookie (docs/console.md)."""
    return not request.secure and (request.url.host or "") not in LOOPBACK and \
        request.headers.get("X-Forwarded-Proto", "") != "https"


async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", {
        "form_token": await login_form_token(request), "next": _safe_next(request.query.get("next")),
        "expired": "expired" in request.query, "error": None, "insecure": _insecure(request),
    })


async def login(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    hub = hub_from(request)
    form = await read_form(request)
    token, given_form_token = form.get("token"), form.get(CSRF_FIELD)
    next_ = _safe_next(str(form.get("next", "")))
    expected_form_token = await login_form_token(request)
    ok_form = isinstance(given_form_token, str) and same(given_form_token, expected_form_token) and \
        not _forged_origin(request)
    if not ok_form or not isinstance(token, str) or not same(token.strip(), hub.admin_token):
        request.config_dict[FAILED_LOGINS].failed(request, started, 401 if ok_form else 403)
        error = "That is not the hub's admin token." if ok_form else "The login form expired; please try again."
        return render(request, "login.html", {"form_token": expected_form_token, "next": next_, "expired": False,
                                              "error": error, "insecure": _insecure(request)},
                      status=401 if ok_form else 403)
    await start(request)
    record_action(hub, request, actor_of(request), 303, None, started, "ok")
    raise web.HTTPSeeOther(next_)


async def logout(request: web.Request) -> web.StreamResponse:
    await end(request, request[OPERATOR])
    raise web.HTTPSeeOther(f"{LOGIN}?logged_out=1")
