"""How the delivery queue runs its Lua scripts: calls made in the same event-loop tick go out together.

Under load many handlers enqueue and ack at once; sending each as its own EVALSHA costs a pool checkout,
a write and a read per call. Batching them keeps the hot path at a fraction of that, without changing
what any single call means: each script is still atomic on its own, results come back per call.

Two runners share that contract. On a plain TCP or Unix-socket Redis, :class:`routing.resp.ScriptConnection`
(one lean pipelined connection, hiredis parsing) does it at a fraction of redis-py's cost per call. Anything
else (fakeredis, TLS, credential providers) gets :class:`ScriptBatcher`: one redis-py pipeline per tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptRunner(Protocol):
    def submit(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one script call for this tick's batch; its answer (or error) arrives on the future."""
        ...

    async def close(self) -> None: ...


# Client options that change how a connection is made or authenticated in ways the lean runner does not copy:
# a client using any of them keeps redis-py (TLS and other connection classes are refused by class).
_NEEDS_REDIS_PY = ("credential_provider", "redis_connect_func")


def script_runner(redis: Redis) -> ScriptRunner:
    """The lean connection when ``redis`` is a plain TCP/Unix client, else a redis-py pipeline batcher."""
    pool = getattr(redis, "connection_pool", None)
    kind = getattr(pool, "connection_class", None)
    options: dict[str, Any] = dict(getattr(pool, "connection_kwargs", {}))
    if kind not in (Connection, UnixDomainSocketConnection) or any(options.get(k) for k in _NEEDS_REDIS_PY):
        return ScriptBatcher(redis)
    from routing.resp import ScriptConnection

    return ScriptConnection(
        host=options.get("host") or "127.0.0.1",
        port=int(options.get("port") or 6379),
        path=options.get("path") if kind is UnixDomainSocketConnection else None,
        db=int(options.get("db") or 0),
        username=options.get("username"),
        password=options.get("password"),
        connect_timeout=float(options.get("socket_connect_timeout") or 5.0),
        command_timeout=float(options.get("socket_timeout") or 10.0),
    )


class ScriptBatcher:
    """The redis-py runner: one pipeline per tick (works on every client redis-py supports, fakeredis too)."""

    def __init__(self, redis: Redis, max_batch: int = 256) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._pending: list[_Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    async def close(self) -> None:
        """Nothing of its own to close (the client belongs to the caller); lets pending batches finish."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            script, keys, args, future = batch[0]
            await self._single(script, keys, args, future)
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection trouble: every caller hears of it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted or flushed its script cache
                await self._single(script, keys, args, future)
            elif isinstance(result, Exception):
                if not future.done():
                    future.set_exception(result)
            elif not future.done():
                future.set_result(result)

    @staticmethod
    async def _single(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any],
                      future: asyncio.Future[Any]) -> None:
        try:
            result = await script(keys=keys, args=args)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
