"""``create_app(settings)``: builds one hub process — store, Redis, queue, delivery, audit — and its routes.

Resources open and close in one cleanup context, so tests start the real app on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from hub import admin, credentials, modules, versions
from hub.audit import AuditWriter
from hub.context import HUB_KEY, Hub
from hub.metrics import Metrics
from hub.observe import observe_middleware
from hub.ocpi.envelope import error_middleware
from hub.platform import ConnectionStatus
from hub.registry import PlatformRegistry
from hub.settings import Settings
from hub.store import open_store
from hub.store.protocol import Store
from routing import keys
from routing.delivery import Delivery
from routing.queue import DeliveryQueue

log = logging.getLogger("hub.app")


def connect_redis(settings: Settings) -> Redis:
    """A real Redis with bounded timeouts, or the embedded fakeredis (one process, not durable)."""
    if settings.redis_url:
        return Redis.from_url(
            settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30,
            max_connections=256,
        )
    import fakeredis

    return fakeredis.FakeAsyncRedis()


def create_app(settings: Settings, *, store: Store | None = None, redis: Redis | None = None) -> web.Application:
    app = web.Application(middlewares=[observe_middleware, error_middleware, admin.admin_auth_middleware],
                          client_max_size=16 * 1024 * 1024)
    app.cleanup_ctx.append(_lifecycle(settings, store, redis))
    versions.add_routes(app)
    credentials.add_routes(app)
    modules.add_routes(app)
    admin.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _lifecycle(settings: Settings, given_store: Store | None, given_redis: Redis | None) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = given_store or await open_store(settings)
        redis = given_redis or connect_redis(settings)
        metrics_ = Metrics()
        registry = PlatformRegistry(store)
        await registry.load()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=settings.connections_per_receiver,
                                         ttl_dns_cache=300, enable_cleanup_closed=True)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",))
        queue = DeliveryQueue(redis, prefix=settings.key_prefix, max_inflight=settings.max_inflight_per_receiver,
                              lease_seconds=settings.forward_timeout * 2 + 5)
        delivery = Delivery(queue=queue, redis=redis, resolve=registry.get, session=session,
                            prefix=settings.key_prefix, forward_timeout=settings.forward_timeout,
                            concurrency=settings.delivery_concurrency)
        audit = AuditWriter(store, interval=settings.audit_flush_interval,
                            on_drop=lambda n: metrics_.audit_dropped.inc(n))
        hub = Hub(settings=settings, store=store, registry=registry, redis=redis, queue=queue, delivery=delivery,
                  session=session, audit=audit, metrics=metrics_,
                  admin_token=settings.admin_token or secrets.token_urlsafe(24))
        app[HUB_KEY] = hub

        async def announce(platform_id: str) -> None:
            await redis.publish(keys.platforms_channel(settings.key_prefix), platform_id)

        registry.on_change = announce
        await delivery.start()
        await audit.start()
        loops = [asyncio.create_task(_follow_platforms(hub)), asyncio.create_task(_refresh_gauges(hub))]
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await delivery.stop()
            await audit.stop()
            await session.close()
            if given_redis is None:
                await redis.aclose()
            if given_store is None:
                await store.close()

    return ctx


async def _follow_platforms(hub: Hub) -> None:
    """Reload a platform when another process announces a change; reload all now and then as a safety net."""
    pubsub = hub.redis.pubsub()
    await pubsub.subscribe(keys.platforms_channel(hub.settings.key_prefix))
    loop = asyncio.get_running_loop()
    next_full = loop.time() + 15
    try:
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    data = message["data"]
                    await hub.registry.reload(data.decode() if isinstance(data, bytes) else str(data))
                if loop.time() >= next_full:
                    next_full = loop.time() + 15
                    await hub.registry.load()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("platform change feed failed; retrying", exc_info=True)
                await asyncio.sleep(1)
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _refresh_gauges(hub: Hub) -> None:
    m = hub.metrics
    while True:
        try:
            for status in (*ConnectionStatus, "REMOVED"):
                m.platforms.labels(status=str(status)).set(0)
            for p in hub.registry.all():
                m.platforms.labels(status="REMOVED" if p.removed else p.status.value).inc()
            for s in await hub.queue.stats():
                m.queue_depth.labels(receiver=s.receiver).set(s.depth)
                m.queue_inflight.labels(receiver=s.receiver).set(s.inflight)
                m.queue_oldest_age.labels(receiver=s.receiver).set(s.oldest_age_seconds)
                m.dead_letters.labels(receiver=s.receiver).set(s.dead_letters)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("refreshing gauges failed", exc_info=True)
        await asyncio.sleep(5)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(hub.redis.ping(), timeout=2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(hub.store.ping(), timeout=2)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", **checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    return web.Response(body=hub.metrics.exposition(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
