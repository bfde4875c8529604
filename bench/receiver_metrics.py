"""What the per-receiver metrics cost as partners grow: memory, CPU per forward, one scrape.

A fresh process imports ``hub.metrics`` (of this checkout, or of ``--src`` for an A/B) and, for N receivers,
records what one answered forward records (a latency observation and a result count per receiver and module),
then a second round over the same receivers (the steady state), then renders /metrics once.

Usage: python bench/receiver_metrics.py [--receivers 10000] [--modules 1] [--src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
from hub.metrics import Metrics

receivers = int(sys.argv[1])
modules = ["locations", "sessions", "cdrs", "tariffs", "tokens", "commands"][:int(sys.argv[2])]
names = [f"receiver-{i:05d}" for i in range(receivers)]

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6

metrics = Metrics()

def one_forward_each():  # what an answered forward records, once per receiver and module; CPU seconds
    started = time.process_time()
    for name in names:
        for module in modules:
            metrics.observe_receiver(module, name, 0.012)
            metrics.count_receiver_result(name, "ok")
    return time.process_time() - started

before = rss_mb()
first = one_forward_each()  # every series new
grown = rss_mb() - before
steady = one_forward_each()  # every series known
started = time.process_time()
size = len(metrics.exposition())
scrape = time.process_time() - started
n = receivers * len(modules)
print(json.dumps({"series_sets": n, "rss_growth_mb": round(grown, 1), "bytes_per_set": round(grown * 1e6 / n),
                  "first_us": round(first / n * 1e6, 2), "steady_us": round(steady / n * 1e6, 2),
                  "scrape_s": round(scrape, 3), "exposition_mb": round(size / 1e6, 1)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--receivers", type=int, default=10_000)
    p.add_argument("--modules", type=int, default=1, choices=range(1, 7), help="modules per receiver")
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent, help="checkout to measure")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(a.src.resolve())}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(a.receivers), str(a.modules)], env=env,
                         capture_output=True, text=True, check=True, cwd=a.src)
    figures = json.loads(out.stdout)
    print(f"{figures['series_sets']} receiver/module pairs ({a.src}):")
    print(f"  memory: +{figures['rss_growth_mb']} MB ({figures['bytes_per_set']} bytes per pair)")
    print(f"  CPU per forward recorded: {figures['first_us']} µs for a new receiver, {figures['steady_us']} µs after")
    print(f"  one /metrics rendering: {figures['scrape_s']} s, {figures['exposition_mb']} MB of text")


if __name__ == "__main__":
    main()
