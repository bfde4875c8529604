"""The TokenType a Tokens URL names: OCPI 2.2.1 and 2.3.0 mod_tokens name a token by uid and ``?type=`` (default
RFID), OCPI 2.1.1 by uid alone. One reading and one writing of that parameter for the router, the bridge between
versions and the store's object ids."""

from __future__ import annotations

from urllib.parse import parse_qs, quote


def query_type(query: str) -> str | None:
    """The ``type`` parameter of a query string (the first, decoded), or None."""
    values = parse_qs(query).get("type")
    return values[0] if values else None


def with_query_type(query: str, token_type: str) -> str:
    """``query`` naming ``token_type``: every ``type`` parameter replaced by that one, or it added."""
    kept = [p for p in query.split("&") if p and p.partition("=")[0] != "type"] if query else []
    return "&".join([*kept, f"type={quote(token_type, safe='')}"])
