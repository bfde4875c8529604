"""Optional ``--profile``: sample the hub with py-spy during an extra, unreported run of each hub scenario.

py-spy is not a project dependency (``pip install py-spy`` into the venv to use it). Profiling runs are
separate from the measured ones so the sampler never changes the reported figures.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path


def find() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(exe: str, pid: int, seconds: float, out: Path) -> None:
    """Collapsed stacks (``--format raw``) of ``pid`` for ``seconds``.

    Only samples holding the GIL count (``--gil``): that is the Python CPU time that caps one process. The
    sampler pauses the hub briefly per sample, which is why profiling runs are not reported.
    """
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250",
        "--format", "raw", "--gil", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=seconds + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")


def save(raw: Path, folder: Path, name: str) -> Path:
    """Keep the collapsed stacks (for flame graphs) and a text summary in ``folder``; returns the summary."""
    folder.mkdir(exist_ok=True)
    (folder / f"profile-{name}.collapsed").write_text(raw.read_text())
    out = folder / f"profile-{name}.txt"
    out.write_text(summarize(raw) + "\n")
    return out


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``: inclusive time is per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize(raw: Path, top: int = 40) -> str:
    """Self time per line and inclusive time per function (counted once per stack), as shares of samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        own[frames[-1]] += n
        for function in {_function(f) for f in frames}:
            incl[function] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples of the hub holding the GIL (Python CPU time)", "", "self %  line"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)
