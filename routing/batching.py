"""How the delivery queue runs its Lua scripts: calls made in the same event-loop tick go out together.

Under load many handlers enqueue and ack at once; sending each as its own EVALSHA costs a pool checkout,
a write and a read per call. Batching them keeps the hot path at a fraction of that, without changing
what any single call means: each script is still atomic on its own, results come back per call.

Two runners share that contract. On a plain TCP or Unix-socket Redis, and on the primary of a Sentinel client
without TLS, :class:`routing.resp.ScriptConnection` (one lean pipelined connection, hiredis parsing) does it at
a fraction of redis-py's cost per call. Anything else (fakeredis, TLS, credential providers) gets
:class:`ScriptBatcher`: one redis-py pipeline per tick.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from routing.replication import Sync, copy_outcome, link, settle, wait_command
from routing.sentinel import locator

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]", Sync | None]


class ScriptRunner(Protocol):
    def submit(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one script call for this tick's batch; its answer (or error) arrives on the future."""
        ...

    def submit_replicated(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], replicas: int,
                          timeout_ms: int) -> asyncio.Future[Any]:
        """Like ``submit``, answered once ``replicas`` replicas have the write (routing/replication.py)."""
        ...

    async def close(self) -> None: ...


# Client options that change how a connection is made or authenticated in ways the lean runner does not copy:
# a client using any of them keeps redis-py (TLS and other connection classes are refused by class).
_NEEDS_REDIS_PY = ("credential_provider", "redis_connect_func")


def script_runner(redis: Redis) -> ScriptRunner:
    """The lean connection when ``redis`` is a plain TCP/Unix client or a Sentinel client's primary (no TLS),
    else a redis-py pipeline batcher."""
    pool = getattr(redis, "connection_pool", None)
    kind = getattr(pool, "connection_class", None)
    options: dict[str, Any] = dict(getattr(pool, "connection_kwargs", {}))
    locate = locator(redis) if kind is SentinelManagedConnection else None
    lean = (Connection, UnixDomainSocketConnection) if locate is None else (SentinelManagedConnection,)
    if kind not in lean or any(options.get(k) for k in _NEEDS_REDIS_PY):
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
        locate=locate,
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
        return self._add(script, keys, args, None)

    def submit_replicated(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], replicas: int,
                          timeout_ms: int) -> asyncio.Future[Any]:
        outer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link(self._add(script, keys, args, (outer, replicas, timeout_ms)), outer)
        return outer

    def _add(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], sync: Sync | None
             ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future, sync))
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
        synced = [(future, sync) for *_, future, sync in batch if sync is not None]
        if len(batch) == 1 and not synced:
            script, keys, args, future, _ = batch[0]
            await self._single(script, keys, args, future)
            return
        loop = asyncio.get_running_loop()
        wait: asyncio.Future[Any] = loop.create_future()
        if synced:
            settle(synced, wait)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for script, keys, args, *_ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if synced:  # WAIT counts this connection's writes: it ends the pipeline that carried them
                pipe.execute_command(*wait_command(synced))
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection trouble: every caller hears of it
            for *_, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            if not wait.done():
                wait.set_exception(exc)
            return
        if synced:
            *results, acked = results
        for (script, keys, args, future, sync), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted or flushed its script cache
                if sync is not None:  # EVALSHA failed, nothing was written: loaded, then again with a WAIT
                    try:
                        await self.redis.script_load(script.script)
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                        continue
                    retry = self._add(script, keys, args, sync)
                    retry.add_done_callback(functools.partial(copy_outcome, target=future))
                    continue
                await self._single(script, keys, args, future)
            elif isinstance(result, Exception):
                if not future.done():
                    future.set_exception(result)
            elif not future.done():
                future.set_result(result)
        if synced and not wait.done():
            if isinstance(acked, Exception):
                wait.set_exception(acked)
            else:
                wait.set_result(acked)

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


