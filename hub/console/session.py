"""The console's session: an encrypted cookie (aiohttp-session's ``EncryptedCookieStorage``, Fernet under a key
derived from ``HUB_SECRET_KEYS``), holding when the operator logged in and the session's CSRF token.

Cookie flags (docs/console.md): HttpOnly, SameSite=Strict, Secure, Path=/console, Max-Age = the session length.
Secure is always set: browsers treat http://127.0.0.1 and http://localhost as secure contexts and keep Secure
cookies there, so development and the browser tests work on plain http loopback; anywhere else the console must
be served over https (the login page warns when it is not).

A session lasts ``HUB_CONSOLE_SESSION_MINUTES`` from the login, however busy the operator is: the login time is in
the cookie and checked on every request, and the Fernet token's own timestamp (set when the cookie is written, i.e.
at login) is checked against the same limit by the storage. Logging out revokes the session id in Redis for the
rest of its lifetime, so a copy of the cookie dies with the logout too.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.web_request import FileField
from aiohttp_session import STORAGE_KEY, Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from multidict import MultiDictProxy

from hub.context import HUB_KEY, Hub
from hub.envelope import Handler
from routing import keys
from routing.ocpi.auth import same_secret
from routing.ocpi.errors import ClientError

COOKIE_NAME: Final = "ocpi_hub_console"
COOKIE_PATH: Final = "/console"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"


def hub_from(request: web.Request) -> Hub:
    """The hub of a console request (the console is a sub-application: the hub sits on the parent app)."""
    return request.config_dict[HUB_KEY]


def session_seconds(hub: Hub) -> int:
    return max(1, round(hub.settings.console_session_minutes * 60))


def storage_for(hub: Hub) -> EncryptedCookieStorage:
    return EncryptedCookieStorage(
        hub.store.sealer.console_key, cookie_name=COOKIE_NAME, path=COOKIE_PATH, max_age=session_seconds(hub),
        secure=True, httponly=True, samesite="Strict",
    )


class _Layer:
    """Holds aiohttp-session's middleware once built."""

    middleware: Any = None


SESSION_LAYER = web.AppKey("console_session_layer", _Layer)


def install(app: web.Application) -> None:
    app[SESSION_LAYER] = _Layer()


@web.middleware
async def session_layer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp-session's middleware, built on the first request: the key comes from the store's sealer, which
    exists only once the hub's resources are open."""
    layer = request.app[SESSION_LAYER]
    if layer.middleware is None:
        layer.middleware = session_middleware(storage_for(hub_from(request)))
    response: web.StreamResponse = await layer.middleware(request, handler)
    return response


@dataclass(frozen=True)
class Operator:
    """A logged-in console user: the session's CSRF token and when the session ends (unix time)."""

    csrf: str
    expires_at: float
    session_id: str


async def operator_of(request: web.Request) -> Operator | None:
    """The logged-in operator of this request, or None (no session, or it expired: then it is cleared)."""
    session = await get_session(request)
    login_at = session.get("login_at")
    if not isinstance(login_at, int | float):
        return None
    expires_at = login_at + session_seconds(hub_from(request))
    sid = str(session.get("sid", ""))
    if time.time() >= expires_at or not sid or await _revoked(request, sid):
        session.invalidate()
        return None
    return Operator(csrf=str(session.get("csrf", "")), expires_at=expires_at, session_id=sid)


async def _revoked(request: web.Request, sid: str) -> bool:
    hub = hub_from(request)
    return bool(await hub.redis.exists(keys.console_revoked(hub.settings.key_prefix, sid)))


async def login_form_token(request: web.Request) -> str:
    """The CSRF token of the login form, kept in a pre-login session (a forged login POST has none)."""
    session = await get_session(request)
    token = session.get("login_csrf")
    if not isinstance(token, str):
        token = session["login_csrf"] = secrets.token_urlsafe(32)
    return token


async def start(request: web.Request) -> Session:
    """A fresh session for a successful login: new CSRF token, nothing carried over from before (fixation)."""
    session = await new_session(request)
    session["login_at"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)
    session["sid"] = secrets.token_urlsafe(16)
    return session


async def end(request: web.Request, operator: Operator) -> None:
    """Log out: the cookie is cleared, and the session is revoked on every worker until it would have ended (a
    copy of the cookie kept elsewhere no longer opens the console)."""
    hub = hub_from(request)
    remaining = max(1, int(operator.expires_at - time.time()) + 1)
    await hub.redis.set(keys.console_revoked(hub.settings.key_prefix, operator.session_id), b"1", ex=remaining)
    (await get_session(request)).invalidate()


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """The posted form (``request.post()``); 400 when the body cannot be read as one. aiohttp's form parser raises
    ValueError on bytes that are not UTF-8 and on a multipart body without a boundary: that was a 500."""
    try:
        return await request.post()
    except ValueError:
        raise ClientError("the form could not be read (not UTF-8, or a malformed multipart body)",
                          http_status=400) from None


def same(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and same_secret(str(given), str(expected))


def has_storage(request: web.Request) -> bool:
    return STORAGE_KEY in request
