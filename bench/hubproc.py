"""The hub under test as a real ``ocpi-hub serve`` subprocess, and the Redis it may use.

Real Redis is used when 127.0.0.1:6379 answers PING (that is the production shape: queue scripts cost a
network round trip); otherwise the hub runs embedded on fakeredis. Its keys live under a unique prefix
that is deleted afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import redis
from common import LOOPBACK, Child

REDIS_URL = f"redis://{LOOPBACK}:6379"
ADMIN_TOKEN = "bench-admin-token-3Fv9Wc6Ts1Gx"  # strong enough for `serve`


def redis_available(url: str = REDIS_URL) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def redis_info(url: str) -> dict[str, Any]:
    """Server version and CPU seconds so far (``used_cpu_user`` + ``used_cpu_sys``)."""
    info: dict[str, Any] = redis.Redis.from_url(url, socket_timeout=5).info()
    return {"version": str(info.get("redis_version", "?")),
            "cpu_s": float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))}


def cleanup_prefix(url: str, prefix: str) -> int:
    """Delete every key of ``prefix`` (``{prefix}:*``, see routing.keys); returns how many were left."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    found = list(client.scan_iter(match="{" + prefix + "}:*", count=1000))
    if found:
        client.delete(*found)
    return len(found)


def new_prefix() -> str:
    return "bench-" + uuid.uuid4().hex[:10]


def hub_child(port: int, data_dir: Path, redis_url: str | None, prefix: str, src: Path | None = None,
              name: str = "hub", extra_env: dict[str, str] | None = None, workers: int = 1,
              python: Path | None = None) -> Child:
    """``ocpi-hub serve`` (one process, or ``--workers N``) with only the settings the bench chose, none inherited.

    ``src``: run the hub of another checkout instead (``python -m hub serve`` there), for A/B comparisons.
    ``extra_env``: more HUB_* settings (e.g. ``HUB_ROAMING_POLICY=agreements`` for the second hub).
    ``python``: the interpreter to run the hub on (a virtualenv's ``python`` with the hub's dependencies; the
    hub's code is still ``src`` or this checkout), to compare CPython versions.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({
        "HUB_HOST": LOOPBACK, "HUB_PORT": str(port), "HUB_PUBLIC_URL": f"http://{LOOPBACK}:{port}",
        "HUB_URL": f"http://{LOOPBACK}:{port}", "HUB_SQLITE_PATH": str(data_dir / "hub.sqlite3"),
        "HUB_LOG_LEVEL": "WARNING", "HUB_ADMIN_TOKEN": ADMIN_TOKEN, "HUB_KEY_PREFIX": prefix,
        "HUB_ALLOW_PRIVATE_URLS": "true",  # the fake partners run on loopback
        # One platform at saturation is the point of the bench: its rate limit still runs (its cost is
        # measured) but never refuses. Waiting rooms likewise stay above wrk's 32 connections.
        "HUB_RATE_LIMIT_RPS": "1000000", "HUB_RATE_LIMIT_BURST": "10000000",
    })
    if redis_url:
        env["HUB_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    serve = ["serve", "--workers", str(workers)] if workers > 1 else ["serve"]
    if src is not None or python is not None:
        code = (src or Path(__file__).resolve().parent.parent).resolve()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
        return Child(name, [str(python or sys.executable), "-m", "hub", *serve], data_dir, env, cwd=code)
    exe = Path(sys.executable).with_name("ocpi-hub")
    return Child(name, [str(exe), *serve], data_dir, env)
