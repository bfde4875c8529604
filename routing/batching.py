"""Coalesce Lua script calls made in the same event-loop tick into one Redis pipeline.

Under load many handlers enqueue and ack at once; sending each as its own EVALSHA costs a pool checkout,
a write and a read per call. Batching them keeps the hot path at a fraction of that, without changing
what any single call means: each script is still atomic on its own, results come back per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, redis: Redis, max_batch: int = 256) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._pending: list[_Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

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
