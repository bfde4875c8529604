"""The per-receiver metrics (``ocpi_hub_receiver_duration_seconds``, ``ocpi_hub_receiver_results``), held compactly.

They are the only metrics whose label sets grow with the partners: one histogram per module and receiver, one
counter per receiver and result. As prometheus-client children a histogram costs about 4.8 KB of memory (a locked
value object per bucket), 47 MB for one module of 10,000 receivers; in multi-process mode each of its 17 samples
is also an entry in every worker's memory-mapped file that each scrape parses again. Here a histogram is one
``array`` of bucket counts and the sum (about 200 bytes), a result count one int, and the exposition is built from
them at scrape time.

With ``serve --workers N`` each worker writes its figures to a file in the shared metrics directory every
``SHARE_EVERY`` seconds and when it stops; a scrape adds the other workers' latest files to its own live figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from prometheus_client.utils import floatToGoString

log = logging.getLogger("hub.metrics")

LATENCY = "ocpi_hub_receiver_duration_seconds"
LATENCY_HELP = "Time the receiver took to answer a forwarded request"
RESULTS = "ocpi_hub_receiver_results"
RESULTS_HELP = "Forward attempts per receiver platform by result: ok, ocpi_error, not_ocpi, timeout, unreachable"
SHARE_EVERY = 5.0  # seconds: how far behind a scrape may see the other workers' per-receiver figures
FILE_PREFIX = "receivers-"  # not *.db: prometheus-client's MultiProcessCollector reads those

_number: Callable[[float], str] = floatToGoString  # as prometheus-client writes values (typed for mypy)

Latency = dict[tuple[str, str], "array[float]"]  # (module, receiver) -> per-bucket counts (+Inf last), then the sum
Results = dict[tuple[str, str], int]  # (receiver, result) -> count


class ReceiverMetrics:
    """One process's per-receiver figures."""

    def __init__(self, buckets: Sequence[float], share_dir: str | None = None, pid: int | None = None) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self.labels = (*(_number(b) for b in self.bounds), "+Inf")
        self._empty = array("d", bytes(8 * (len(self.bounds) + 2)))  # the buckets, +Inf, the sum: all 0
        self.latency: Latency = {}
        self.results: Results = {}
        self.share_dir = share_dir
        self.pid = os.getpid() if pid is None else pid
        self._changed = False

    def observe(self, module: str, receiver: str, seconds: float) -> None:
        row = self.latency.get((module, receiver))
        if row is None:
            row = self.latency[(module, receiver)] = array("d", self._empty)
        row[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= seconds (le)
        row[-1] += seconds
        self._changed = True

    def count(self, receiver: str, result: str) -> None:
        key = (receiver, result)
        self.results[key] = self.results.get(key, 0) + 1
        self._changed = True

    # -- exposition ----------------------------------------------------------------------------------
    def render(self, latency: Latency, results: Results) -> bytes:
        """Prometheus text, line for line what prometheus-client's ``generate_latest`` writes for these two families,
        in a tenth of its time: 17 lines per receiver and module are 170,000 lines at 10,000 receivers."""
        out = [f"# HELP {LATENCY} {LATENCY_HELP}\n# TYPE {LATENCY} histogram\n"]
        number = _number
        for (module, receiver), row in latency.items():
            labels = f'module="{_escaped(module)}",receiver="{_escaped(receiver)}"'
            cumulative = 0.0
            for le, n in zip(self.labels, row, strict=False):  # the sum, last in the row, has no label
                cumulative += n
                out.append(f'{LATENCY}_bucket{{le="{le}",{labels}}} {number(cumulative)}\n')
            out.append(f"{LATENCY}_count{{{labels}}} {number(cumulative)}\n{LATENCY}_sum{{{labels}}} "
                       f"{number(row[-1])}\n")
        out.append(f"# HELP {RESULTS}_total {RESULTS_HELP}\n# TYPE {RESULTS}_total counter\n")
        for (receiver, result), n in results.items():
            out.append(f'{RESULTS}_total{{receiver="{_escaped(receiver)}",result="{_escaped(result)}"}} '
                       f"{number(float(n))}\n")
        return "".join(out).encode()

    def snapshot(self) -> tuple[Latency, Results]:
        """A copy that may be read off the event loop (each copy is one C call: atomic under the GIL)."""
        return {key: array("d", row) for key, row in self.latency.copy().items()}, self.results.copy()

    # -- several workers -------------------------------------------------------------------------------
    @property
    def _file(self) -> Path:
        assert self.share_dir is not None
        return Path(self.share_dir) / f"{FILE_PREFIX}{self.pid}.json"

    def write_share(self) -> None:
        """This worker's figures into its file in the shared directory (replaced whole: a reader never sees half)."""
        if self.share_dir is None:
            return
        self._changed = False
        latency, results = self.snapshot()
        doc = {"latency": [[m, r, row.tolist()] for (m, r), row in latency.items()],
               "results": [[r, res, n] for (r, res), n in results.items()]}
        tmp = self._file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc))
        os.replace(tmp, self._file)

    async def share(self, every: float = SHARE_EVERY) -> None:
        """Runs with ``serve --workers N``: the file follows this worker's figures (written off the event loop)."""
        while True:
            await asyncio.sleep(every)
            if self._changed:
                try:
                    await asyncio.to_thread(self.write_share)
                except OSError as exc:
                    log.warning("writing the per-receiver metrics for other workers failed: %s", exc)

    def merged(self) -> tuple[Latency, Results]:
        """This process's live figures plus every other worker's latest file (workers that stopped included:
        their counts stay part of the hub's totals, as prometheus-client keeps a stopped worker's file)."""
        latency, results = self.snapshot()
        if self.share_dir is None:
            return latency, results
        for path in Path(self.share_dir).glob(f"{FILE_PREFIX}*.json"):
            if path == self._file:
                continue
            # A file being replaced, or one of another version's layout, is left out of this scrape only.
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError, IndexError):
                doc = orjson.loads(path.read_bytes())
                for module, receiver, values in doc["latency"]:
                    if len(values) != len(self._empty):
                        continue
                    row = latency.get((module, receiver))
                    if row is None:
                        latency[(module, receiver)] = array("d", values)
                    else:
                        for i, v in enumerate(values):
                            row[i] += v
                for receiver, result, n in doc["results"]:
                    results[(receiver, result)] = results.get((receiver, result), 0) + int(n)
        return latency, results


def _escaped(value: str) -> str:
    """A label value as the text format needs it (receiver ids are the hub's own, but the format must hold)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
