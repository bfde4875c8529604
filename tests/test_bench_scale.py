"""bench/scale.py end to end at toy sizes: every part runs against real hubs and the table and JSON come out.

Needs the real Redis and wrk (the bench's own requirements); skipped without them. Figures are not checked
(speed is for bench/), only that the bench measured what it says: errors, receivers reached, the GET All count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BENCH, bench_runnable


@pytest.mark.skipif(not bench_runnable(), reason="needs wrk and Redis on 127.0.0.1:6379")
def test_scale_bench_runs_every_part_and_reports_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--sizes", "4", "--spread", "3", "--handshakes", "1",
         "--duration", "1", "--warmup", "0", "--locations", "150", "--workers-connections", "8",
         "--time-limit", "120", "--json", str(tmp_path / "scale.json")],
        capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| platforms |" in out.stdout and "GET All: 150/150" in out.stdout
    doc = json.loads((tmp_path / "scale.json").read_text())
    assert doc["ok"]
    rows = {(r["part"], r["platforms"], r["workers"], r["load"]): r for r in doc["rows"]}
    assert set(rows) == {("platforms", 5, 1, "1 pair"), ("platforms", 5, 1, "spread"), ("workers", 5, 1, "1 pair"),
                         ("workers", 5, 1, "spread"), ("workers", 5, 2, "1 pair"), ("workers", 5, 2, "spread")}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows.values())
    assert rows[("platforms", 5, 1, "spread")]["receivers_reached"] == 3
    assert rows[("platforms", 5, 1, "1 pair")]["receivers_reached"] == 1
    walk = doc["get_all"]["walk"]
    assert (walk["items"], walk["distinct"], walk["pages"]) == (150, 150, 2)
    assert [s["preloaded"] for s in doc["sizes"] if s["name"] == "size-4"] == [2]
