"""CPU time and resident memory of a process and all its descendants (``ocpi-hub serve --workers N`` is a
supervisor with N worker children), read from /proc."""

from __future__ import annotations

import os
from pathlib import Path

from common import cpu_seconds


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible now."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry.name)] = int(fields[1])
    return out


def tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu(root: int) -> float:
    """User + system CPU seconds of the tree (its live members: workers outlive a measurement)."""
    return sum(cpu_seconds(pid) for pid in tree(root))


def rss_mb(root: int) -> float:
    """Resident set of the tree in MiB (shared pages counted once per process, as ``ps`` does)."""
    total_kb = 0
    for pid in tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
