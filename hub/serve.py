"""``ocpi-hub serve``: run the hub, in one process or as N processes sharing one port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from hub.app import create_app
from hub.logs import setup_logging
from hub.settings import Settings


def admin_token_file(settings: Settings) -> Path:
    """Where a generated admin token is kept so the CLI on this machine finds it (mode 0600)."""
    return settings.data_dir / "admin-token"


def _write_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def _banner(settings: Settings, workers: int, generated: bool) -> None:
    out = sys.stdout
    print(f"OCPI hub listening on http://{settings.host}:{settings.port} (public URL {settings.public_url})", file=out)
    print(f"  versions URL for partners: {settings.public_url.rstrip('/')}/ocpi/versions", file=out)
    print(f"  hub party: {settings.hub_country_code}/{settings.hub_party_id} (role HUB), workers: {workers}", file=out)
    if generated:
        print(f"  admin token (generated, saved to {admin_token_file(settings)}): {settings.admin_token}", file=out)
    else:
        print("  admin token: from HUB_ADMIN_TOKEN", file=out)
    store = "MongoDB" if settings.mongo_url else f"SQLite at {settings.sqlite_path}"
    print(f"  store: {store} (platforms, registrations and audit survive restarts)", file=out)
    if settings.embedded:
        print("  queues: embedded fakeredis, ONE process - queued messages are NOT durable and are lost on restart;"
              " set HUB_REDIS_URL for durable queues and --workers", file=out)
    else:
        print(f"  queues: Redis at {settings.redis_url}", file=out)
    out.flush()


async def _serve(settings: Settings, reuse_port: bool) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _worker(env: dict[str, str], reuse_port: bool) -> None:
    os.environ.update(env)
    settings = Settings()
    setup_logging(settings.log_level)
    _run_loop(_serve(settings, reuse_port))


def _run_loop(coro: object) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(coro)  # type: ignore[arg-type]


def serve(workers: int = 1, host: str | None = None, port: int | None = None) -> int:
    overrides = {k: v for k, v in (("HUB_HOST", host), ("HUB_PORT", str(port) if port else None)) if v}
    os.environ.update(overrides)
    settings = Settings()
    if workers > 1 and settings.embedded:
        print("--workers needs a real Redis: set HUB_REDIS_URL (the embedded fakeredis lives in one process)",
              file=sys.stderr)
        return 2
    generated = not settings.admin_token
    if generated:
        settings.admin_token = secrets.token_urlsafe(24)
        _write_token(admin_token_file(settings), settings.admin_token)
    assert settings.admin_token is not None
    _banner(settings, workers, generated)
    env = {**overrides, "HUB_ADMIN_TOKEN": settings.admin_token}
    if workers <= 1:
        _worker(env, reuse_port=False)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(env, True), name=f"ocpi-hub-{i}") for i in range(workers)]
    for p in procs:
        p.start()

    def _forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)
