"""bench/queue_redis_cpu.py end to end at toy size: it starts a Redis of its own, drives the queue as routed
requests do, and reports Redis's CPU per request with the scripts' share. Figures are not compared (speed is for
bench/); the test checks that each was read and that the scripts' time is part of Redis's CPU. Skipped without
``redis-server``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BENCH


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_reports_redis_cpu_per_routed_request_and_the_scripts_share(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "queue_redis_cpu.py"), "--requests", "2000", "--rounds", "1",
         "--json", str(tmp_path / "cpu.json")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "round 1/1: Redis CPU " in out.stdout
    fig = json.loads((tmp_path / "cpu.json").read_text())
    assert fig["requests"] == 2000 and fig["rounds"] == 1
    assert 0 < fig["zadd_us"] < fig["scripts_us"], fig  # each request's ZADDs run inside its scripts
    assert fig["redis_cpu_us"] > 0, fig
