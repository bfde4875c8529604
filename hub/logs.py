"""Structured logs: one JSON object per line; request lines carry ids, parties, module and outcome, never tokens."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "ocpi", None)
        if isinstance(extra, dict):
            line.update(extra)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line, default=str).decode()
        except orjson.JSONEncodeError:  # text that is not UTF-8 (a lone surrogate from a header): escaped, kept
            return orjson.dumps(_escaped(line), default=str).decode()


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    return value


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class ThrottledLog:
    """At most ``lines`` lines per ``interval`` seconds of each kind, then a count of the ones held back.

    For what a caller can cause at will (refused requests, malformed HTTP, a store refusing a record): a flood
    must not turn into a flood of log lines. Kinds are fixed strings chosen by the code, so the state is bounded.
    ``flush()`` (called now and then) reports a suppressed count even when the flood has stopped.
    """

    def __init__(self, logger: logging.Logger, *, lines: int, interval: float,
                 on_suppressed: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.lines = lines
        self.interval = interval
        self.on_suppressed = on_suppressed
        self._clock = clock
        self._windows: dict[str, list[Any]] = {}  # kind -> [window start, lines logged, suppressed, level]

    def log(self, level: int, kind: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Logs unless this kind's budget of the current interval is spent; True when it did."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window[0] >= self.interval:
            if window is not None:
                self._report(kind, window)
            window = self._windows[kind] = [now, 0, 0, level]
        if window[1] >= self.lines:
            window[2] += 1
            if self.on_suppressed is not None:
                self.on_suppressed(kind)
            return False
        window[1] += 1
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def flush(self) -> None:
        """Reports the suppressed count of every interval that has ended."""
        now = self._clock()
        for kind, window in list(self._windows.items()):
            if now - window[0] >= self.interval:
                self._report(kind, window)
                del self._windows[kind]

    def _report(self, kind: str, window: list[Any]) -> None:
        if window[2]:
            self.logger.log(window[3], "%d more '%s' lines suppressed in %g s", window[2], kind, self.interval,
                            extra={"ocpi": {"kind": kind, "suppressed": window[2]}})
            window[2] = 0


class MalformedHttpFilter(logging.Filter):
    """Stands in for aiohttp's own log line about a request its HTTP parser refused (it answers 400 itself).

    aiohttp logs each one at ERROR with a full traceback, several times the size of the request: a cheap way to
    flood the logs. This filter, on the ``aiohttp.server`` logger, hands the client errors (4xx) to
    ``on_malformed`` (a metric and a throttled one-line warning) and drops aiohttp's line; everything else, the
    server errors included, passes unchanged. A process serves one app; with several apps in one process (tests)
    the first one started counts them all.
    """

    def __init__(self, on_malformed: Callable[[BaseException], None]) -> None:
        super().__init__("hub.malformed-http")
        self.on_malformed = on_malformed

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            self.on_malformed(exc)
            return False
        return True


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short printable-ASCII line (the parser quotes the offending bytes)."""
    text = " ".join(str(exc).split())
    return text.encode("ascii", "backslashreplace").decode("ascii")[:limit]
