"""``HUB_REDIS_URL``: which forms the hub accepts, read in one place (docs/high-availability.md).

A single Redis is any URL redis-py reads (``redis://``, ``rediss://`` for TLS, ``unix://``). A Redis watched by
Sentinel has no such standard form in redis-py, so the hub reads this one::

    redis+sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/<service>[/<db>][?sentinel_password=..]
    rediss+sentinel://...   the same, with TLS to the Redis nodes (and to the Sentinels: ``sentinel_tls=no`` off);
                            ``ssl_ca_certs``, ``ssl_cert_reqs`` and ``ssl_check_hostname`` as in a rediss:// URL

``user``/``password`` authenticate to the Redis nodes (the primary and its replicas); the Sentinels take
``sentinel_password`` (and ``sentinel_user``) or nothing. A host without a port is Sentinel's default 26379.
Errors are one line and never repeat the URL (it may carry a password).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_PORT = 26379
SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_TLS_QUERY = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_check_hostname")
_QUERY = frozenset(("sentinel_password", "sentinel_user", "sentinel_tls", *_TLS_QUERY))


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the Sentinels, the monitored service and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    sentinel_tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()  # ssl_* options of redis-py, for every TLS connection


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def check_redis_url(url: str) -> None:
    """Raise ValueError (one line, without the URL) when the hub cannot use ``url``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme not in SINGLE_SCHEMES:
        raise ValueError("must start with redis://, rediss:// (TLS), unix://, redis+sentinel:// or rediss+sentinel://")
    if scheme != "unix":
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError("has an invalid port") from None
        if not parts.hostname:
            raise ValueError("names no host")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The Sentinels, service, db and credentials of a ``redis+sentinel://`` URL (ValueError when malformed)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError("is not a redis+sentinel:// or rediss+sentinel:// URL")
    rest, _, query = rest.partition("?")
    rest = rest.split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon and username:  # redis://secret@host is a password in redis-py's reading too
            username, password = None, username
    sentinels = tuple(_host_port(item) for item in hostlist.split(",") if item.strip())
    if not sentinels:
        raise ValueError("names no Sentinel (redis+sentinel://host1:26379,host2:26379/<service>)")
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ValueError("names no Sentinel service (the master name after the hosts: .../<service>)")
    if len(segments) > 2:
        raise ValueError("has more than /<service>/<db> in its path")
    service = unquote(segments[0])
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError("has a database that is not a number (/<service>/<db>)")
        db = int(segments[1])
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - _QUERY)
    if unknown:
        raise ValueError(f"has unknown option {unknown[0]!r} (known: {', '.join(sorted(_QUERY))})")

    def option(name: str) -> str | None:
        values = options.get(name)
        return values[-1] if values else None

    tls = scheme.lower() == "rediss+sentinel"
    sentinel_tls = tls
    if (flag := option("sentinel_tls")) is not None:
        if flag.lower() not in ("yes", "no", "true", "false", "1", "0"):
            raise ValueError("has sentinel_tls that is not yes or no")
        sentinel_tls = flag.lower() in ("yes", "true", "1")
    tls_options = tuple((name, value) for name in _TLS_QUERY if (value := option(name)) is not None)
    if tls_options and not tls:
        raise ValueError(f"has {tls_options[0][0]} without TLS (use rediss+sentinel://)")
    return SentinelTarget(sentinels=sentinels, service=service, db=db, username=username, password=password,
                          sentinel_username=option("sentinel_user") or None,
                          sentinel_password=option("sentinel_password") or None, tls=tls, sentinel_tls=sentinel_tls,
                          tls_options=tls_options)


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, tail = item[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError("has a Sentinel without a host name")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("has a Sentinel port that is not a number from 1 to 65535")
    return host, int(port_text)
