"""The OCPI Authorization header: ``Token <base64(token)>``, the raw token tolerated (OCPI 2.2.1 Authorization
header); and the hub's other secrets callers send (the admin and metrics bearer tokens, the console's CSRF token),
compared in one way."""

from __future__ import annotations

import base64
import binascii
import hmac

from multidict import CIMultiDictProxy

from routing.ocpi.errors import Unauthorized


def sole_authorization(headers: CIMultiDictProxy[str]) -> str | None:
    """The Authorization header, None when absent; ``Unauthorized`` when sent more than once, whatever the values:
    a proxy in front of the hub may have authorized the request on another line than the hub would read
    (RFC 9110 §5.3; docs/security.md, "Repeated headers")."""
    values = headers.getall("Authorization", ())
    if len(values) > 1:
        raise Unauthorized("Authorization header sent more than once")
    return values[0] if values else None


def token_candidates(header: str | None) -> list[str]:
    """Possible credentials tokens in an Authorization header, most likely first.

    2.2.1 wants Base64; 2.1.1 and many 2.2 peers send the raw token. The spec's own examples encode a
    trailing newline, and a valid token has no whitespace, so it is stripped after decoding.
    """
    if not header:
        raise Unauthorized("missing Authorization header")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "token" or not value:
        raise Unauthorized("Authorization header must be 'Token <token>'")
    if not value.isascii():  # a non-UTF-8 byte arrives as a lone surrogate: no token has one, and it cannot be hashed
        raise Unauthorized("unknown token")
    candidates: list[str] = []
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if decoded and decoded.isprintable() and " " not in decoded:
        candidates.append(decoded)
    candidates.append(value)
    return candidates


def authorization_header(token: str, encoding: str = "base64") -> str:
    """What the hub sends to a peer; ``raw`` is for peers that do not decode (2.1.1 style)."""
    if encoding == "raw":
        return f"Token {token}"
    return "Token " + base64.b64encode(token.encode()).decode()


def same_secret(given: str, expected: str) -> bool:
    """A secret a caller sent equals ours, compared in constant time. A non-UTF-8 header byte arrives as a lone
    surrogate: compared as the bytes sent (surrogateescape), it is a mismatch, never an encoding error."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def bearer_is(headers: CIMultiDictProxy[str], secret: str) -> bool:
    """``Authorization: Bearer <secret>`` (the admin API, /metrics), sent once, compared in constant time."""
    try:
        header = sole_authorization(headers)
    except Unauthorized:
        return False
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and same_secret(given.strip(), secret)
