"""Requests as raw bytes over a socket: request targets and header bytes exactly as a hostile client sends them,
which no HTTP client library would (they normalise paths and refuse non-ASCII headers)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from multidict import CIMultiDict


async def raw_request(host: str, port: int, method: str, target: str | bytes,
                      headers: dict[str, str | bytes] | None = None,
                      body: bytes = b"") -> tuple[int, CIMultiDict[str], Any]:
    """One HTTP/1.1 request; returns the status, the answer's headers and its JSON body (None when not JSON)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        raw_target = target.encode() if isinstance(target, str) else target
        lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", f"Host: {host}".encode(), b"Connection: close",
                 f"Content-Length: {len(body)}".encode()]
        for name, value in (headers or {}).items():
            lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    got: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        got.add(name.strip(), value.strip())
    try:
        doc = json.loads(payload) if payload else None
    except ValueError:
        doc = None
    return int(status_line.split(" ", 2)[1]), got, doc
