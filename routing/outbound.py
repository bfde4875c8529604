"""The one outbound-URL policy: which URLs the hub calls with its credentials (docs/security.md, "Outbound URLs").

Every URL the hub calls comes from outside: the versions URL an operator or a partner gives, the version details
and endpoint URLs a partner advertises, and the URLs a partner hands over in traffic (``response_url``, ``Link``,
``Location``), which the hub stores as callbacks and calls later. Without a policy a partner could point them at
the hub's own network (Redis, a cloud metadata service, an admin console) and learn from the answers what is
reachable there. The rules:

- http(s) only, a host, no user name or password in the URL;
- no private, loopback, link-local, unspecified, multicast or reserved address, whether written in the URL or
  what its host name resolves to at connect time (``PolicyResolver``: a name that resolves to a public address
  when checked and to 127.0.0.1 when called - DNS rebinding - is refused too), unless
  ``HUB_ALLOW_PRIVATE_URLS`` (development, tests);
- a URL a partner hands over in traffic must be on a host that platform registered (``registered_hosts``);
- never the hub's own public URL (host and port of ``HUB_PUBLIC_URL``): the hub would forward to itself.

Checks are cached per URL string: the forward path pays one dictionary lookup per request.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from routing.ocpi.errors import InvalidParameters
from routing.platform import PER_ENDPOINT_CACHE, Platform

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are an IPv4 address


def address_refusal(ip: IPAddress) -> str | None:
    """Why the hub must not connect to ``ip`` (None: a public unicast address).

    IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) are judged by that address too:
    ``::ffff:127.0.0.1`` is loopback, whatever the IPv6 tables say.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None,
                    ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None]
        for inner in embedded:
            if inner is not None and (why := address_refusal(inner)) is not None:
                return why
    for name, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return f"{name} address {ip}"
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), documentation ranges
        return f"non-public address {ip}"
    return None


@functools.lru_cache(maxsize=PER_ENDPOINT_CACHE)
def _refusal(url: str, allow_private: bool, own: tuple[str, int] | None) -> str | None:
    try:
        parsed = URL(url)
        port = parsed.port  # a port out of range raises here, not at connect time
    except (ValueError, TypeError):
        return "not a valid URL"
    if parsed.scheme not in ("http", "https"):
        return "only http and https URLs are allowed"
    host = parsed.raw_host
    if not host or port is None:
        return "the URL has no host"
    if parsed.raw_user is not None or parsed.raw_password is not None:
        return "a URL with a user name or password is not allowed"
    if own is not None and (host_of(url), port) == own:
        return "the hub's own public URL: the hub does not call itself"
    if allow_private:
        return None
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None  # a host name: its addresses are checked when the hub connects (PolicyResolver)
    why = address_refusal(ip)
    return f"{why} is not allowed" if why else None


@functools.lru_cache(maxsize=PER_ENDPOINT_CACHE)
def host_of(url: str) -> str | None:
    """The host a URL points at, lower-cased, without brackets; None when there is none."""
    try:
        host = URL(url).raw_host
    except (ValueError, TypeError):
        return None
    if not host:
        return None
    host = host.lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per address: 0:0::1 is ::1
    except ValueError:
        return host.rstrip(".")


# OCPI 2.2.1 types the URLs it defines as string(255); pagination Links carry queries: room for those, no more.
MAX_URL_LENGTH = 2048
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_ALLOWED_HOSTS = 20


def normalise_host(text: str) -> str:
    """An entry of a platform's ``allowed_hosts``: a host name or IP address, lower-cased; ``ValueError`` for
    anything else (a scheme, a port, a path or a wildcard: the allow-list names hosts exactly)."""
    host = text.strip().lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{text!r} is not a host name or IP address (no scheme, port, path or wildcard)")
    return ".".join(labels)


def registered_hosts(platform: Platform) -> frozenset[str]:
    """The hosts a platform may hand over URLs on: those of its versions URL and of every endpoint it advertised,
    and the operator's per-platform allow-list."""
    hosts = {host_of(platform.versions_url)} if platform.versions_url else set()
    hosts.update(host_of(ep.url) for ep in platform.endpoints)
    hosts.update(h.lower() for h in platform.allowed_hosts)
    hosts.discard(None)
    return frozenset(h for h in hosts if h)


class OutboundPolicy:
    """The rules of one hub process; ``allow_private`` is ``HUB_ALLOW_PRIVATE_URLS``."""

    def __init__(self, *, allow_private: bool = False, public_url: str | None = None) -> None:
        self.allow_private = allow_private
        # A partner that registers the hub's own URLs would have the hub forward its requests to itself.
        self._own: tuple[str, int] | None = None
        if public_url:
            with contextlib.suppress(ValueError, TypeError):
                own = URL(public_url)
                if (host := host_of(public_url)) and own.port is not None:
                    self._own = (host, own.port)

    def refusal(self, url: str) -> str | None:
        """Why the hub must not call ``url`` (scheme, host, address written in it), or None."""
        if len(url) > MAX_URL_LENGTH:  # checked before the cache: it must not hold megabytes of hostile URLs
            return f"longer than {MAX_URL_LENGTH} characters"
        return _refusal(url, self.allow_private, self._own)

    def check(self, url: str, field: str) -> str:
        """``url`` if the hub may call it, else ``InvalidParameters`` (400/2001) naming the field it came in."""
        if not isinstance(url, str):
            raise InvalidParameters(f"{field}: not a URL")
        why = self.refusal(url)
        if why is not None:
            raise InvalidParameters(f"{field} refused: {why}")
        return url

    def check_handed_over(self, url: str, hosts: frozenset[str], field: str) -> str:
        """A URL a partner hands over in traffic: the rules of ``check``, and on a host that platform registered."""
        self.check(url, field)
        if host_of(url) not in hosts:
            raise InvalidParameters(f"{field} refused: host {host_of(url)} is not one this platform registered "
                                    "(its versions and endpoint hosts, or the hub operator's allowed_hosts)")
        return url

    def resolver(self) -> AbstractResolver:
        """The resolver of the shared ClientSession: checks what a host name resolves to, at every connect."""
        return DefaultResolver() if self.allow_private else PolicyResolver()


class RefusedAddress(OSError):
    """Every address a host name resolved to is refused by the policy: aiohttp reports it as a connect error."""


def refused_address(exc: BaseException) -> RefusedAddress | None:
    """The policy's refusal behind a client connection error, if that is what it was."""
    if isinstance(exc, RefusedAddress):  # the forward client (routing/upstream.py) raises it as it is
        return exc
    inner = getattr(exc, "os_error", None)
    return inner if isinstance(inner, RefusedAddress) else None


class PolicyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then drops refused addresses; none left → ``RefusedAddress``.

    The check runs where the connection is made, on the addresses actually used, so a DNS answer that changes
    between a URL's check and its call (DNS rebinding) cannot reach a refused address.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for entry in found:
            why = _address_refusal_of(entry["host"])
            if why is None:
                allowed.append(entry)
            else:
                refused.append(why)
        if not allowed:
            raise RefusedAddress(f"{host} resolves only to refused addresses ({', '.join(refused) or 'none'})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _address_refusal_of(address: Any) -> str | None:
    try:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
    except ValueError:
        return f"unparsable address {address!r}"
    return address_refusal(ip)
