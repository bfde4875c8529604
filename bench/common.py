"""Helpers shared by the benchmark's processes: ports, OCPI tokens and envelopes, child processes.

Kept free of hub imports so the reference proxy and the fake receiver measure aiohttp, not the hub's code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    ``bind(0)`` picks from the ephemeral range, which every outgoing connection draws its local port from too:
    between this check and the server's own bind, a client socket (wrk, the hub's forwards) could take the port,
    and the server then failed with EADDRINUSE (seen after a benchmark run's hundreds of thousands of connections).
    Below that range only another server takes a port, and a random pick makes two callers' picks unlikely to meet.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(200):
        with socket.socket() as s:
            port = random.randrange(max(1024, low - 20000), low) if low > 2048 else 0
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free loopback port below the ephemeral range")


def ocpi_token(token: str) -> str:
    """OCPI 2.2.1 Authorization header value: ``Token <base64(token)>``."""
    return "Token " + base64.b64encode(token.encode()).decode()


def envelope(data: Any = None, status_code: int = 1000, message: str = "Success") -> bytes:
    """An OCPI response envelope; compact JSON so load generators can look for ``"status_code":1000``."""
    body: dict[str, Any] = {"status_code": status_code, "status_message": message,
                            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if data is not None:
        body["data"] = data
    return orjson.dumps(body)


def install_uvloop() -> bool:
    """Use uvloop when installed, exactly as ``hub.serve`` does, so hub and reference run on the same loop."""
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


def _stat_cpu_seconds(stat: Path) -> float | None:
    """User + system CPU time from a ``/proc`` stat file (None when it is gone)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 when it is gone)."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat")) or 0.0


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of each thread of a process, by thread id (a thread that ended is left out)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        seconds = _stat_cpu_seconds(task / "stat")
        if seconds is not None:
            out[int(task.name)] = seconds
    return out


class Child:
    """A long-lived child process in its own session, logged to a file, always stopped by its own id."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=self.env,
                cwd=self.cwd, start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self, grace: float = 8.0) -> None:
        """SIGTERM to the child's own process group, SIGKILL after ``grace`` seconds."""
        if self.proc is None or self.proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=wait)
                return
            except TimeoutError:
                continue


async def wait_http(url: str, limit: float, child: Child | None = None) -> None:
    """Poll ``url`` until it answers (any HTTP status) or fail with the child's log."""
    import aiohttp

    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if child is not None and not child.alive():
                break
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url) as resp:
                    await resp.read()
                    return
            await asyncio.sleep(0.1)
    tail = child.log_tail() if child is not None else ""
    raise RuntimeError(f"{url} did not answer within {limit:.0f}s\n{tail}")


def python_argv(script: str, *args: str) -> list[str]:
    """Run a sibling script with this interpreter (the project venv under ``make bench``)."""
    return [sys.executable, str(HERE / script), *args]
