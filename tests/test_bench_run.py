"""bench/run.py end to end at toy size: rounds measure what they say, round after round.

Needs the real Redis and wrk (the bench's own requirements); skipped without them. Figures are not checked
(speed is for bench/), only that each round of the store-and-forward PUT is new work for the hub (its request ids
were once the same in every run, so later rounds were taken for retries and nothing was delivered) and that its
backlog is delivered before the next scenario starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BENCH, bench_runnable


@pytest.mark.skipif(not bench_runnable(), reason="needs wrk and Redis on 127.0.0.1:6379")
def test_every_round_of_the_stored_put_is_delivered_before_the_next_scenario(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--rounds", "2", "--duration", "1", "--warmup", "0",
         "--broadcasts", "0", "--no-bridged", "--time-limit", "150", "--json", str(tmp_path / "run.json")],
        capture_output=True, text=True, timeout=200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "hub/bare req/s GET, round by round: " in out.stdout
    doc = json.loads((tmp_path / "run.json").read_text())
    stored = [r for r in doc["all_rounds"] if r["scenario"] == "hub PUT stored"]
    assert len(stored) == 2
    for row in stored:
        assert row["requests"] > 50 and row["errors"] == 0
        # what was not delivered during the run was delivered before the next scenario
        assert row["drain_s"] is not None and 0 <= row["drain_s"] < 60
        # the receiver got a share of this round's PUTs while it ran: a round whose request ids repeated the first
        # round's was answered "accepted before" and delivered nothing
        assert row["receiver_seen"] >= row["requests"] // 5, row
    assert all(len(v) == 2 for v in doc["round_ratios_hub_over_bare"].values())
