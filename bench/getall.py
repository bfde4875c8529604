"""GET All through the hub (``scale.py``): a CPO broadcasts N Locations TO the hub, then an eMSP walks the hub's
locations SENDER interface (TO = the hub) page by page, following ``Link`` until there is none (OCPI 2.2.1
Pagination; GET All via Hub), and checks it got each Location exactly once."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import fanout
import onboard

NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


async def broadcast(hub_sender: onboard.Registration, count: int, concurrency: int) -> dict[str, Any]:
    """``count`` location PUTs TO NL/HUB by the sender's CPO NL/CPA, as fast as ``concurrency`` allows."""
    base = hub_sender.hub_endpoints[("locations", "RECEIVER")] + "/" + "/".join(fanout.OWNER)
    ids = [f"GA{i:06d}" for i in range(count)]
    started = time.perf_counter()
    sent = await fanout.send_all(base, hub_sender.auth, ids, concurrency, rate=0)
    seconds = time.perf_counter() - started
    errors = [s.error for s in sent if s.accepted is None]
    return {"broadcasts": count, "accepted": count - len(errors), "seconds": round(seconds, 2),
            "per_s": round(count / seconds, 1) if seconds else None, "errors": len(errors),
            "error_examples": errors[:3]}


async def walk(session: aiohttp.ClientSession, hub_sender: onboard.Registration, expected: int) -> dict[str, Any]:
    """Every page of GET All for the eMSP DE/EMA, from the first URL to the last ``Link``."""
    url: str | None = hub_sender.hub_endpoints[("locations", "SENDER")]
    headers = {"Authorization": hub_sender.auth, "OCPI-from-country-code": "DE", "OCPI-from-party-id": "EMA",
               "OCPI-to-country-code": fanout.HUB_PARTY[0], "OCPI-to-party-id": fanout.HUB_PARTY[1]}
    ids: list[str] = []
    page_ms: list[float] = []
    total_count: int | None = None
    started = time.perf_counter()
    while url is not None:
        n = len(page_ms)
        t0 = time.perf_counter()
        async with session.get(url, headers={**headers, "X-Request-ID": f"walk-{n}",
                                             "X-Correlation-ID": f"walk-corr-{n}"}) as resp:
            doc = await resp.json(content_type=None)
            link = resp.headers.get("Link", "")
            total_count = int(resp.headers.get("X-Total-Count", "-1"))
        page_ms.append((time.perf_counter() - t0) * 1000)
        if resp.status != 200 or not isinstance(doc, dict) or doc.get("status_code") != 1000:
            raise RuntimeError(f"GET All page {n}: HTTP {resp.status} {str(doc)[:300]}")
        ids += [item["id"] for item in doc.get("data") or []]
        match = NEXT.search(link)
        url = match.group(1) if match else None
    seconds = time.perf_counter() - started
    third = max(1, len(page_ms) // 3)
    return {"items": len(ids), "distinct": len(set(ids)), "expected": expected, "x_total_count": total_count,
            "ok": len(ids) == expected and len(set(ids)) == expected, "pages": len(page_ms),
            "seconds": round(seconds, 3), "items_per_s": round(len(ids) / seconds, 1) if seconds else None,
            "page_ms": {"first_third_mean": round(sum(page_ms[:third]) / third, 2),
                        "last_third_mean": round(sum(page_ms[-third:]) / third, 2),
                        "max": round(max(page_ms), 2)}}


async def wait_delivered(received_puts: Any, expected: int, limit: float = 120.0) -> int:
    """Until the receiver got ``expected`` PUTs (the fan-out of the broadcasts) or ``limit`` seconds passed."""
    deadline = time.monotonic() + limit
    seen = 0
    while time.monotonic() < deadline:
        seen = await received_puts()
        if seen >= expected:
            break
        await asyncio.sleep(0.2)
    return seen
