"""bench/ab.py end to end at toy size: two hubs up side by side, loaded in turn, and the figures it reports.

Needs the real Redis and wrk (the bench's own requirements); skipped without them. Figures are not compared
(speed is for bench/): the test checks that every turn loaded both hubs with both methods, and that each hub's CPU
per request was read for its event loop and for its audit writer thread. That the load sends the ids asked for is
tests/test_bench_request_ids.py's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BENCH, bench_runnable


@pytest.mark.skipif(not bench_runnable(), reason="needs wrk and Redis on 127.0.0.1:6379")
def test_two_hubs_loaded_in_turn_report_per_turn_ratios_and_thread_cpu(tmp_path: Path) -> None:
    """Side B's hub runs on the interpreter ``--b-python`` names (here a wrapper that leaves a mark, then runs
    this interpreter): how CPython versions are compared."""
    mark = tmp_path / "b-python-ran"
    wrapper = tmp_path / "python-b"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {mark}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    out = subprocess.run(
        [sys.executable, str(BENCH / "ab.py"), "--turns", "2", "--duration", "1", "--b-ids", "random",
         "--b-python", str(wrapper), "--time-limit", "150", "--json", str(tmp_path / "ab.json")],
        capture_output=True, text=True, timeout=200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "turn 2/2: GET A " in out.stdout
    assert mark.read_text().split() == ["-m", "hub", "serve"]  # side B's hub, and only it
    fig = json.loads((tmp_path / "ab.json").read_text())
    assert (fig["sides"]["A"]["python"], fig["sides"]["B"]["python"]) == (sys.executable, str(wrapper))
    for method in ("GET", "PUT"):
        f = fig["methods"][method]
        assert len(f["b_over_a_by_turn"]) == 2 and all(r > 0 for r in f["b_over_a_by_turn"])
        for side in ("A", "B"):
            assert f[side]["rps_median"] > 50
            assert f[side]["event_loop_cpu_us_per_request"] > 0
            # the SQLite store writes every request's audit record on a thread of its own
            assert f[side]["other_threads_cpu_us_per_request"] > 0
