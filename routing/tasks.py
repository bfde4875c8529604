"""Stopping background tasks reliably.

On Python 3.11, ``asyncio.wait_for`` - used inside redis-py, and by loops that wait on an event with a timeout -
can swallow a cancellation when the awaited operation completes in the same loop iteration (CPython bpo-42130,
fixed in 3.12). A ``while True`` loop hit by it carries on, and a shutdown that cancels it once and awaits it
hangs forever. ``stop_task`` repeats the cancellation until the task has really finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("hub.tasks")


async def stop_task(task: asyncio.Task[Any], *, patience: float = 10.0) -> None:
    """Cancel ``task`` (again and again if it swallows it) and wait until it is done; never raises its error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
        if not task.done() and loop.time() >= deadline:
            log.warning("task %s did not stop within %.0fs; leaving it", task.get_name(), patience)
            return
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %s had failed", task.get_name(), exc_info=task.exception())


class LoopWatch:
    """The background loops a process cannot do without (delivery, the platform feed, the audit writer, ...).

    Each runs until shutdown and answers its own errors; one that ends anyway (a bug) would leave the process
    serving while part of its work silently stopped: the delivery listener, for one, took every later reply
    another process delivered for it along. Such an end is logged at once, counted in a metric (``on_ended``), and
    ``ended`` makes ``/healthz`` answer 503, so that what supervises the process (Kubernetes' liveness probe)
    restarts it; Docker marks the container unhealthy. Ends after ``stopping`` are shutdown's own."""

    def __init__(self) -> None:
        self.ended: dict[str, str] = {}
        self.on_ended: Callable[[int], None] | None = None  # told how many have ended (a metric)
        self._stopping = False

    def watch(self, *tasks: asyncio.Task[Any] | None) -> None:
        for task in tasks:
            if task is not None:
                task.add_done_callback(self._done)

    def stopping(self) -> None:
        self._stopping = True

    def _done(self, task: asyncio.Task[Any]) -> None:
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        # The error's type only: /healthz is open to anyone, and a message may name internals (the log has it).
        self.ended[task.get_name()] = type(exc).__name__ if exc is not None else "returned"
        log.error("background task %s ended (%s): this process no longer does all its work, and /healthz answers "
                  "503 until it is restarted", task.get_name(), exc if exc is not None else "returned", exc_info=exc)
        if self.on_ended is not None:
            self.on_ended(len(self.ended))


class PeriodicFlush:
    """What buffers writes and flushes them every ``interval`` seconds on one background task (the audit writer,
    the usage recorder); ``stop`` flushes what is left. Subclasses set ``interval`` and implement ``flush``."""

    task_name = "periodic-flush"
    interval: float
    _task: asyncio.Task[None] | None = None

    async def flush(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
