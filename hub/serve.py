"""``ocpi-hub serve``: run the hub, in one process or as N processes sharing one port (SO_REUSEPORT).

With ``--workers N`` this process is a small supervisor: it prepares the store once (schema, WAL mode) so the
workers do not race to create it, points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory so ``/metrics`` on
any worker shows the whole hub, starts the workers, forwards SIGTERM/SIGINT to them, and stops them all and
exits non-zero when one of them dies (a supervisor such as systemd or Kubernetes then restarts the hub). A
worker whose supervisor disappears (``kill -9``) stops on its own, so no orphan keeps serving the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn
from urllib.parse import urlsplit

from hub import admin_token
from hub.app import create_app
from hub.connections import CannotListen, NotReady, start_site
from hub.logs import setup_logging
from hub.metrics import MULTIPROC_ENV
from hub.sealing import SecretKeyError, load_sealer
from hub.settings import Settings, SettingsError, load_settings
from hub.store import open_store
from routing.tasks import stop_task

log = logging.getLogger("hub.serve")

STOP_GRACE_SECONDS = 30.0  # after SIGTERM, how long workers get before SIGKILL
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StartError(Exception):
    """The hub cannot start; the message is one line for the operator."""


def _banner(settings: Settings, workers: int, generated: bool, kept: bool) -> None:
    out = sys.stdout
    print(f"OCPI hub listening on http://{settings.host}:{settings.port} (public URL {settings.public_url})", file=out)
    if settings.env == "development":
        print("  HUB_ENV=development: a weak admin token would be accepted", file=out)
    print(f"  versions URL for partners: {settings.public_url.rstrip('/')}/ocpi/versions", file=out)
    print(f"  hub party: {settings.hub_country_code}/{settings.hub_party_id} (role HUB), workers: {workers}", file=out)
    if generated:
        how = "generated earlier, kept in" if kept else "generated, saved to"
        print(f"  admin token ({how} {settings.admin_token_path}): {settings.admin_token}", file=out)
    else:
        print("  admin token: from HUB_ADMIN_TOKEN", file=out)
    store = "MongoDB" if settings.mongo_url else f"SQLite at {settings.sqlite_path}"
    print(f"  store: {store} (platforms, registrations and audit survive restarts)", file=out)
    if settings.embedded:
        print("  queues: embedded fakeredis, ONE process - queued messages are NOT durable and are lost on restart;"
              " set HUB_REDIS_URL for durable queues and --workers", file=out)
    else:
        print(f"  queues: Redis at {_without_password(settings.redis_url or '')}", file=out)
    if workers > 1:
        print(f"  metrics: /metrics on the shared port merges all {workers} workers", file=out)
    if settings.host not in LOOPBACK and settings.public_url == f"http://127.0.0.1:{settings.port}":
        print(f"  warning: HUB_PUBLIC_URL is not set, partners are told {settings.public_url}", file=out)
    out.flush()


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """A worker outlives its supervisor only by a second: re-parenting means the supervisor is gone."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent_pid:
            break
    log.warning("supervisor %d is gone; stopping", parent_pid)
    stop.set()


async def _serve(settings: Settings, reuse_port: bool, parent_pid: int | None,
                 on_ready: Callable[[], None] | None = None) -> int:
    """Run one hub process; ``on_ready`` runs once the site is bound and Redis and the store answered."""
    try:
        runner = await start_site(create_app(settings), settings, reuse_port=reuse_port)
    except (CannotListen, NotReady) as exc:
        _failed_start(str(exc))
    except Exception as exc:
        log.debug("the hub could not start", exc_info=True)
        _failed_start(f"the hub could not start: {_reason(exc)}")
    if on_ready is not None:
        on_ready()  # before any await: the banner and the token file precede the first request handled
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
    await stop.wait()
    if watchdog is not None:
        await stop_task(watchdog)
    await runner.cleanup()
    return 0


def tune_gc() -> None:
    """Collector settings for a long-running server, applied once the app has started.

    Everything built at start-up (modules, settings, the platform view) is frozen out of the collector's
    reach, and the young generation is collected every 50 000 net allocations instead of every 700: each
    routed request allocates a few hundred short-lived containers, so the default made the collector run
    several times per request burst (about 8 % of the CPU and most of the p99 in ``make bench``). Reference
    counting still frees almost everything at once; only cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _without_password(url: str) -> str:
    """A URL fit for the banner: a password in it becomes ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _failed_start(message: str) -> NoReturn:
    """One line, then exit at once: aiohttp does not undo a start-up that failed half-way, and a resource it
    left open (the embedded store's thread, fakeredis pub/sub) would keep the process alive for ever."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def _reason(exc: BaseException) -> str:
    """One line: the exception's own words, or its type when it has none."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _worker(env: dict[str, str], reuse_port: bool, parent_pid: int | None = None,
            ready: multiprocessing.connection.Connection | None = None) -> int:
    os.environ.update(env)
    settings = load_settings()
    setup_logging(settings.log_level)

    def tell_supervisor() -> None:
        if ready is not None:
            ready.send(os.getpid())
            ready.close()

    code = _run_loop(_serve(settings, reuse_port, parent_pid, tell_supervisor))
    if parent_pid is not None:  # a worker process: its exit code is what the supervisor sees
        sys.exit(code)
    return code


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(coro)


async def _prepare_store(settings: Settings) -> None:
    store = await open_store(settings)
    await store.close()


def serve(workers: int = 1, host: str | None = None, port: int | None = None) -> int:
    """Start the hub; a setting or start-up problem is one line on stderr and a non-zero exit."""
    try:
        return _serve_checked(workers, host, port)
    except (SettingsError, StartError, admin_token.AdminTokenError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def _check_data_dir(settings: Settings) -> None:
    """The embedded store and a generated token live in the data dir: it must be a writable folder."""
    if settings.mongo_url and settings.admin_token:
        return
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartError(f"cannot create the data folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartError(f"the data folder {path} is not writable (HUB_SQLITE_PATH={settings.sqlite_path})")


def _serve_checked(workers: int, host: str | None, port: int | None) -> int:
    overrides = {k: v for k, v in (("HUB_HOST", host), ("HUB_PORT", str(port) if port else None)) if v}
    os.environ.update(overrides)
    settings = load_settings()
    if workers < 1:
        raise StartError("--workers must be at least 1")
    if workers > 1 and settings.embedded:
        raise StartError("--workers needs a real Redis: set HUB_REDIS_URL (the embedded fakeredis lives in one "
                         "process)")
    admin_token.check_configured(settings)
    _check_data_dir(settings)
    try:
        load_sealer(settings)  # a missing or bad key stops here with one line; a kept key file is created now
    except SecretKeyError as exc:
        raise StartError(str(exc)) from None
    generated = not settings.admin_token
    token, kept = (settings.admin_token, False) if settings.admin_token else admin_token.kept_or_new(settings)
    settings.admin_token = token
    env = {**overrides, "HUB_ADMIN_TOKEN": token}

    def started() -> None:
        """Every process listens and reached Redis and the store: keep the token, then say so."""
        if generated:
            admin_token.keep(settings, token)
        _banner(settings, workers, generated, kept)

    if workers == 1:
        os.environ.update(env)
        setup_logging(settings.log_level)
        return _run_loop(_serve(settings, False, None, started))
    # Create the schema (and switch SQLite to WAL, which fails rather than waits when another process holds a
    # lock) once, here, instead of N workers racing to do it.
    try:
        asyncio.run(_prepare_store(settings))
    except Exception as exc:
        raise StartError(f"cannot open the store: {_reason(exc)}") from None
    metrics_dir = tempfile.mkdtemp(prefix="ocpi-hub-metrics-")
    # Set before the workers start: prometheus-client reads it once, when a worker first imports it.
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        return _supervise(env, workers, started)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(env: dict[str, str], workers: int, started: Callable[[], None]) -> int:
    """Run the workers; ``started`` runs once every one of them is listening and ready."""
    ctx = multiprocessing.get_context("spawn")
    me = os.getpid()
    pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]
    procs = [ctx.Process(target=_worker, args=(env, True, me, send), name=f"ocpi-hub-{i}")
             for i, (_recv, send) in enumerate(pipes)]
    waiting = [recv for recv, _send in pipes]  # workers not ready yet
    stopping = False

    def _signal_all(signum: int) -> None:
        for p in procs:
            if p.pid and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    def _forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        _signal_all(signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for p in procs:
        p.start()
    for _recv, send in pipes:
        send.close()  # the workers hold the sending ends: a dead worker's pipe reads as closed
    if stopping:  # a signal came while starting
        _signal_all(signal.SIGTERM)
    failed = announced = False
    ready = 0
    deadline: float | None = None
    while True:
        # Decide on one reading of the exit codes: checking again later could see a death this round missed.
        codes = [(p, p.exitcode) for p in procs]
        live = [p for p, code in codes if code is None]
        if not live:
            break
        if not stopping and len(live) < len(procs):
            for p, code in codes:
                if code is not None:
                    print(f"error: worker {p.name} (pid {p.pid}) exited with code {code}; stopping the hub",
                          file=sys.stderr, flush=True)
            failed = stopping = True
            _signal_all(signal.SIGTERM)
        if stopping and deadline is None:
            deadline = time.monotonic() + STOP_GRACE_SECONDS
        if deadline is not None and time.monotonic() >= deadline:
            _signal_all(signal.SIGKILL)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
        timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
        readable = multiprocessing.connection.wait([*(p.sentinel for p in live), *waiting], timeout=timeout)
        for conn in waiting[:]:
            if conn in readable:
                # A pid: that worker is ready. End of file: it died first (its sentinel says so next round).
                try:
                    conn.recv()
                    ready += 1
                except (EOFError, OSError):
                    pass
                waiting.remove(conn)
                conn.close()
        if ready == workers and not announced and not stopping:
            announced = True
            started()
        elif any(not isinstance(r, multiprocessing.connection.Connection) for r in readable):
            # A sentinel closes a moment before its process can be reaped: do not spin meanwhile.
            time.sleep(0.01)
    if failed or any(p.exitcode != 0 for p in procs):
        return 1
    return 0
