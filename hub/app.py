"""``create_app(settings)``: builds one hub process — store, Redis, queue, delivery, audit — and its routes.

Resources open and close in one cleanup context, so tests start the real app on a free port.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from redis.asyncio import Redis

from hub import admin, clientinfo, credentials, modules, versions
from hub.admission import Admission, AdmissionLimits
from hub.agreements import AgreementKeeper
from hub.audit import AuditWriter
from hub.bridging import record_written_again, write_at_delivery, write_superseded
from hub.clientinfo import LIVENESS_KEY, Liveness
from hub.console import add_console
from hub.context import HUB_KEY, Hub
from hub.envelope import TRANSLATE_ERROR
from hub.logs import MalformedHttpFilter, ThrottledLog, one_line
from hub.metrics import CONTENT_TYPE, Metrics
from hub.observe import observe_middleware
from hub.ratelimit import RateLimits
from hub.registry import PlatformFeed, PlatformRegistry
from hub.settings import Settings
from hub.store import open_store
from hub.store.protocol import HubStore
from hub.usage import UsageRecorder
from routing import keys
from routing.agreements import Agreement, AgreementBook
from routing.callbacks import Callbacks, ResultLifetime
from routing.delivery import LIST_HEADERS, RELAYED_HEADERS, Delivery
from routing.ocpi.auth import bearer_is
from routing.ocpi.versions import SUPPORTED
from routing.open_routing import RouteHints
from routing.outbound import OutboundPolicy
from routing.platform import ConnectionStatus, Platform, RateLimit, utcnow
from routing.queue import DeliveryQueue
from routing.redis_health import REFUSING_WRITES, UNREACHABLE, RedisHealth
from routing.redis_url import is_sentinel_url, parse_sentinel_url
from routing.roaming import Roaming
from routing.sentinel import primary_pool, sentinel_client
from routing.store_forward import DeliveryLedger
from routing.tasks import stop_task
from routing.upstream import Upstream

log = logging.getLogger("hub.app")


def connect_redis(settings: Settings) -> Redis:
    """A real Redis (one, or the primary Sentinel names) with bounded timeouts, or the embedded fakeredis (one
    process, not durable)."""
    if settings.redis_url:
        # HUB_REDIS_TIMEOUT bounds connecting and every answer (the queue's lean script connection takes both from
        # here): a frozen Redis becomes the hub's 503 well before a forwarded request's deadline.
        if is_sentinel_url(settings.redis_url):  # docs/high-availability.md
            return sentinel_client(parse_sentinel_url(settings.redis_url), timeout=settings.redis_timeout,
                                   health_check_interval=30, max_connections=256)
        return Redis.from_url(
            settings.redis_url, socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout, health_check_interval=30, max_connections=256,
        )
    import fakeredis

    return fakeredis.FakeAsyncRedis()


def admission_limits(settings: Settings) -> AdmissionLimits:
    return AdmissionLimits(
        process_requests=settings.max_waiting_requests, process_bytes=settings.max_waiting_bytes,
        receiver_requests=settings.max_waiting_requests_per_receiver,
        receiver_bytes=settings.max_waiting_bytes_per_receiver, retry_after=settings.admission_retry_after,
    )


def create_app(settings: Settings, *, store: HubStore | None = None, redis: Redis | None = None) -> web.Application:
    app = web.Application(middlewares=[observe_middleware],
                          client_max_size=settings.max_body_bytes)
    app.cleanup_ctx.append(_lifecycle(settings, store, redis))
    versions.add_routes(app)
    credentials.add_routes(app)
    modules.add_routes(app)
    clientinfo.add_routes(app)
    admin.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if settings.console:
        add_console(app)
    return app


def _lifecycle(settings: Settings, given_store: HubStore | None, given_redis: Redis | None) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = given_store or await open_store(settings)
        redis = given_redis or connect_redis(settings)
        metrics_ = Metrics()
        metrics_.redis_up.set(1)
        for kind in (UNREACHABLE, REFUSING_WRITES):  # exported as 0 from the start: rates and alerts need series
            metrics_.redis_outages.labels(kind=kind)
        if (pool := primary_pool(redis)) is not None:  # Sentinel: each primary change this process sees
            pool.on_change = lambda old, new: metrics_.redis_failovers.inc()
        health = RedisHealth(redis, keys.probe(settings.key_prefix), timeout=settings.redis_timeout,
                             on_change=metrics_.redis_state)
        app[TRANSLATE_ERROR] = health.unavailable  # a Redis outage anywhere below a handler: 503, logged once
        registry = PlatformRegistry(store, unknown_token_ttl=settings.unknown_token_cache_seconds,
                                    unknown_token_max=settings.unknown_token_cache_size,
                                    on_unknown_token=lambda source: metrics_.unknown_tokens.labels(source=source).inc())

        def throttled(logger: logging.Logger, lines: int = settings.log_throttle_lines) -> ThrottledLog:
            return ThrottledLog(logger, lines=lines, interval=settings.log_throttle_interval,
                                on_suppressed=lambda kind: metrics_.log_suppressed.labels(kind=kind).inc())

        client_log, hub_log = throttled(logging.getLogger("hub.requests")), throttled(log)

        def malformed(exc: BaseException) -> None:
            metrics_.malformed_http.inc()
            hub_log.log(logging.WARNING, "malformed_http", "malformed HTTP request refused: %s", one_line(exc))

        parser_filter = MalformedHttpFilter(malformed)
        logging.getLogger("aiohttp.server").addFilter(parser_filter)
        feed = PlatformFeed(registry, redis, keys.platforms_channel(settings.key_prefix))
        feed.health = health
        book = AgreementBook()
        keeper = AgreementKeeper(store, book)
        keeper.on_change = feed.also(keeper, keys.agreements_channel(settings.key_prefix), "agreement")
        await feed.open()  # subscribed before the first load: no change slips in between
        await registry.load()
        if not settings.embedded:
            await _note_persistence(redis)
        await keeper.load()
        roaming = Roaming(settings.roaming_policy, book, registry)
        outbound = OutboundPolicy(allow_private=settings.allow_private_urls, public_url=settings.public_url)
        # The resolver checks the addresses of every host name the hub connects to (DNS rebinding).
        resolver = outbound.resolver()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=settings.connections_per_receiver,
                                         ttl_dns_cache=300, enable_cleanup_closed=True, resolver=resolver)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",))
        upstream = (Upstream(resolver, limit_per_origin=settings.connections_per_receiver, headers=RELAYED_HEADERS,
                             lists=LIST_HEADERS) if settings.forward_client == "lean" else None)
        script_flags = await _supports_script_flags(redis)
        queue = DeliveryQueue(redis, prefix=settings.key_prefix, max_inflight=settings.max_inflight_per_receiver,
                              script_flags=script_flags, lease_seconds=settings.forward_timeout * 2 + 5,
                              wait_replicas=settings.redis_wait_replicas, wait_timeout=settings.redis_timeout / 2,
                              dead_letter_max_count=settings.dead_letter_max_count,
                              dead_letter_max_bytes=settings.dead_letter_max_bytes,
                              dead_letter_ttl=settings.dead_letter_ttl)
        queue.on_evicted = metrics_.count_evicted
        delivery = Delivery(queue=queue, redis=redis, resolve=registry.get, refresh=registry.refresh, session=session,
                            prefix=settings.key_prefix, forward_timeout=settings.forward_timeout,
                            concurrency=settings.delivery_concurrency, max_reply_bytes=settings.max_reply_bytes,
                            retry_window=settings.broadcast_retry_window, outbound=outbound,
                            url_hosts=registry.url_hosts, health=health,
                            ledger=DeliveryLedger(redis, settings.key_prefix,
                                                  keep_for=settings.store_forward_window + 86400),
                            store_forward_window=settings.store_forward_window,
                            store_forward_max_backoff=settings.store_forward_max_backoff, upstream=upstream)
        delivery.on_stored = metrics_.count_stored
        delivery.admit_push = roaming.push_refusal
        delivery.on_refused = lambda msg, why: metrics_.pushes_refused.labels(kind=msg.kind).inc()
        delivery.on_retry = lambda msg: metrics_.retries.labels(receiver=msg.receiver).inc()
        delivery.on_result = metrics_.count_receiver_result
        audit = AuditWriter(store, interval=settings.audit_flush_interval,
                            on_drop=lambda n: metrics_.audit_dropped.inc(n),
                            on_rejected=lambda result: metrics_.audit_rejected.labels(result=result).inc(),
                            failure_log=throttled(logging.getLogger("hub.audit"), lines=1))  # tracebacks: 1/interval
        hub = Hub(settings=settings, store=store, registry=registry, redis=redis, queue=queue, delivery=delivery,
                  health=health, agreements=book, agreement_keeper=keeper, roaming=roaming,
                  usage=UsageRecorder(store, failure_log=throttled(logging.getLogger("hub.usage"), lines=1)),
                  session=session, audit=audit, metrics=metrics_,
                  admin_token=settings.admin_token or secrets.token_urlsafe(24),
                  callbacks=Callbacks(redis, prefix=settings.key_prefix,
                                      base_url=settings.public_url.rstrip("/") + "/ocpi/2.2.1",
                                      policy=outbound, hosts_of=registry.url_hosts,
                                      results=ResultLifetime(grace=settings.result_url_grace,
                                                             maximum=settings.result_url_max_lifetime)),
                  hints=RouteHints(store, store.sealer.hint_keys), client_log=client_log, outbound=outbound,
                  admission=Admission(admission_limits(settings), on_refused=metrics_.count_admission_refused),
                  rate_limits=RateLimits(RateLimit(settings.rate_limit_rps, settings.rate_limit_burst), redis=redis,
                                         prefix=settings.key_prefix, interval=settings.rate_limit_sync_interval,
                                         hold=settings.rate_limit_hold, health=health,
                                         on_limited=metrics_.count_rate_limited))
        app[HUB_KEY] = hub
        liveness = Liveness(hub)
        hub.on_seen = liveness.seen
        app[LIVENESS_KEY] = liveness

        async def push_client_info(old: Platform | None, new: Platform) -> None:
            await clientinfo.announce(hub, old, new)

        registry.on_saved = push_client_info

        async def introduce(agreements: Sequence[Agreement]) -> None:
            await clientinfo.introduce(hub, agreements)

        keeper.on_saved = introduce
        delivery.on_written_again = functools.partial(record_written_again, hub)  # audit + metrics of a re-translation
        delivery.write_with_hub = functools.partial(write_at_delivery, hub)  # a push into or out of 2.1.1
        delivery.write_superseded = functools.partial(write_superseded, hub)  # a push behind newer ones, whole

        registry.on_change = feed.announce
        await delivery.start()
        await audit.start()
        await hub.usage.start()
        await liveness.start()
        loops = [asyncio.create_task(feed.run(), name="platform-feed"),
                 asyncio.create_task(_refresh_gauges(hub), name="gauges"),
                 asyncio.create_task(_purge_audit(hub), name="audit-retention"),
                 asyncio.create_task(purge_personal_data(hub), name="personal-data-retention"),
                 asyncio.create_task(_flush_logs(settings.log_throttle_interval, client_log, hub_log,
                                                 audit.failure_log),
                                     name="log-throttle"),
                 asyncio.create_task(hub.rate_limits.run(), name="rate-limit-exchange")]
        if metrics_.multiprocess_dir is not None:  # serve --workers N: the others' scrapes read this worker's files
            loops.append(asyncio.create_task(metrics_.receivers.share(), name="receiver-metrics"))
            loops.append(asyncio.create_task(metrics_.run_request_flush(), name="request-metrics"))
        hub.loops.on_ended = metrics_.loops_ended.set
        hub.loops.watch(*loops, *delivery.loops, audit.task, hub.usage.task, liveness.task)
        try:
            yield
        finally:
            hub.loops.stopping()
            for task in loops:
                await stop_task(task)
            if metrics_.multiprocess_dir is not None:  # what this worker counted stays part of the hub's totals
                metrics_.flush_requests()
                try:
                    await asyncio.to_thread(metrics_.receivers.write_share)
                except OSError as exc:
                    log.warning("writing the per-receiver metrics for other workers failed: %s", exc)
            await liveness.stop()
            await feed.close()
            await delivery.stop()
            await queue.close()
            await hub.rate_limits.close()
            await health.close()
            await audit.stop()
            await hub.usage.stop()
            await hub.hints.flush()
            await session.close()
            if upstream is not None:
                await upstream.close()
            logging.getLogger("aiohttp.server").removeFilter(parser_filter)
            await resolver.close()  # a resolver passed in is not closed by its connector
            if given_redis is None:
                await redis.aclose()
            if given_store is None:
                await store.close()

    return ctx


async def _supports_script_flags(redis: Redis) -> bool:
    """Redis 7 runs the queue's finishing scripts at maxmemory (``allow-oom``); older ones cannot parse the flag."""
    if type(redis).__module__.startswith("fakeredis"):  # embedded: no maxmemory, no script flags
        return False
    version = str((await redis.info("server")).get("redis_version", "0"))
    if int(version.split(".")[0] or 0) >= 7:
        return True
    log.warning("Redis %s is older than 7.0: at maxmemory the queue cannot drain by itself (docs/security.md)",
                version)
    return False


async def _note_persistence(redis: Redis) -> None:
    """Say once what an accepted message survives (store-and-forward answers 1000 once it is in Redis,
    docs/store-and-forward.md): that depends on Redis' AOF settings, which the hub cannot change."""
    try:
        conf = await redis.config_get("append*")
    except Exception:  # managed Redis services often disable CONFIG
        log.info("Redis persistence unknown (CONFIG GET refused): what the hub accepted survives a Redis restart "
                 "only with AOF on (docs/store-and-forward.md)")
        return
    if conf.get("appendonly") != "yes":
        log.warning("Redis AOF is off: messages the hub accepted for later delivery (store-and-forward) are lost "
                    "if Redis restarts; run it with appendonly yes (docs/store-and-forward.md)")
    elif conf.get("appendfsync") != "always":
        log.info("Redis AOF on, appendfsync %s: accepted messages survive a Redis restart or crash; a crash of the "
                 "Redis host's OS can lose the last second (appendfsync always closes that gap)",
                 conf.get("appendfsync"))


async def _refresh_gauges(hub: Hub) -> None:
    m = hub.metrics
    seen: set[str] = set()
    while True:
        try:
            waiting = hub.admission.stats()
            m.admission_waiting_requests.set(waiting.requests)
            m.admission_waiting_bytes.set(waiting.bytes)
            counts = dict.fromkeys((*(str(s) for s in ConnectionStatus), "REMOVED"), 0)
            for p in hub.registry.all():
                counts["REMOVED" if p.removed else p.status.value] += 1
            for status, count in counts.items():  # set, never reset-and-count: a scrape sees no half state
                m.platforms.labels(status=status).set(count)
            versions = dict.fromkeys(SUPPORTED, 0)
            for p in hub.registry.all():
                if not p.removed and p.version is not None:
                    versions[p.version] = versions.get(p.version, 0) + 1
            for version, count in versions.items():
                m.platforms_by_version.labels(version=version).set(count)
            # Only receivers with something queued, in flight or dead-lettered: the queue remembers every receiver
            # ever routed to, and gauges of thousands of idle ones cost every process seconds of CPU a minute.
            stats = await hub.queue.busy_stats()
            now = {s.receiver for s in stats}
            for s in stats:
                m.queue_depth.labels(receiver=s.receiver).set(s.depth)
                m.queue_inflight.labels(receiver=s.receiver).set(s.inflight)
                m.queue_oldest_age.labels(receiver=s.receiver).set(s.oldest_age_seconds)
                m.dead_letters.labels(receiver=s.receiver).set(s.dead_letters)
                m.dead_letter_bytes.labels(receiver=s.receiver).set(s.dead_letter_bytes)
            for receiver in seen - now:  # drained and forgotten by the queue: show 0, not the last value
                for gauge in (m.queue_depth, m.queue_inflight, m.queue_oldest_age, m.dead_letters,
                              m.dead_letter_bytes):
                    gauge.labels(receiver=receiver).set(0)
            seen = now
            if hub.delivery.ledger is not None:
                for row in await hub.delivery.ledger.stats():
                    labels = {"receiver": row["receiver"], "module": row["module"]}
                    m.store_forward_waiting.labels(**labels).set(row["waiting"])
                    m.store_forward_oldest_age.labels(**labels).set(row["oldest_age_seconds"])
            if not hub.settings.embedded:  # the alert "Redis nearly full" needs these (deploy/prometheus)
                memory = await hub.redis.info("memory")
                m.redis_used_memory.set(float(memory.get("used_memory", 0)))
                m.redis_maxmemory.set(float(memory.get("maxmemory", 0)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            hub.health.report(exc, log, "refreshing gauges failed")
        await asyncio.sleep(5)


async def _flush_logs(interval: float, *logs: ThrottledLog) -> None:
    """Reports what the log throttles held back, also once a flood has stopped."""
    while True:
        await asyncio.sleep(interval)
        for throttled in logs:
            try:
                throttled.flush()
            except Exception:  # a broken log handler: the next interval tries again
                log.warning("reporting what a log throttle held back failed", exc_info=True)


AUDIT_PURGE_INTERVAL = 3600.0  # seconds between retention purges (one also runs at start)


async def _purge_audit(hub: Hub) -> None:
    """Audit retention: MongoDB expires records by TTL index; the embedded SQLite store needs this purge."""
    while True:
        try:
            cutoff = utcnow() - timedelta(days=hub.settings.audit_retention_days)
            removed = await hub.store.purge_audit(cutoff)
            if removed:
                log.info("purged %d audit records older than %s", removed, cutoff.isoformat())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("audit retention purge failed; retrying later", exc_info=True)
        await asyncio.sleep(AUDIT_PURGE_INTERVAL)


async def purge_personal_data(hub: Hub) -> None:
    """Retention of stored personal data, on both stores, at start and hourly (``retention_pass``)."""
    while True:
        try:
            await retention_pass(hub)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("personal data retention purge failed; retrying later", exc_info=True)
        await asyncio.sleep(AUDIT_PURGE_INTERVAL)


async def retention_pass(hub: Hub) -> None:
    """One purge (hints and tokens carry no BSON date a TTL index could use without a second copy): tokens kept for
    GET All, route hints nobody pushed again, and Sessions and CDRs kept for catch-up past their expiry (all of them
    once ``HUB_CATCHUP_DAYS`` is 0; MongoDB's TTL index also removes expired ones on its own)."""
    now = utcnow()
    tokens = await hub.store.purge_objects("tokens", now - timedelta(days=hub.settings.token_retention_days))
    hints = await hub.store.purge_route_hints(now - timedelta(days=hub.settings.route_hint_retention_days))
    routed = await hub.store.purge_routed(now if hub.settings.catchup_days > 0 else datetime.max.replace(tzinfo=UTC))
    if tokens or hints or routed:
        log.info("retention: dropped %d stored tokens, %d route hints and %d sessions and CDRs kept for catch-up",
                 tokens, hints, routed)


def metrics_authorized(headers: CIMultiDictProxy[str], token: str | None) -> bool:
    """``HUB_METRICS_TOKEN`` unset: open. Set: ``Bearer <token>``, sent once, compared in constant time."""
    if token is None:
        return True
    return bearer_is(headers, token)


async def healthz(request: web.Request) -> web.Response:
    """Alive: serving, and every background loop still running (routing/tasks.py ``LoopWatch``)."""
    ended = request.app[HUB_KEY].loops.ended
    if ended:
        return web.json_response({"status": "failing", "ended": ended}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(hub.redis.ping(), timeout=2)
        # PING is answered by a Redis at maxmemory too: during an outage, ready only once it takes a write again.
        checks["redis"] = "ok" if hub.health.up or await hub.health.probe() else f"outage: {hub.health.kind}"
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
    if not metrics_authorized(request.headers, hub.settings.metrics_token):
        return web.json_response({"error": "/metrics needs Authorization: Bearer <HUB_METRICS_TOKEN>"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"})
    # Off the event loop: with thousands of receivers the text is 100,000s of lines (and with several workers it
    # reads every worker's files).
    hub.metrics.flush_requests()  # on the event loop, where requests are counted
    body = await asyncio.to_thread(hub.metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
