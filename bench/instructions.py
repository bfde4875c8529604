"""CPU instructions the hub executes per routed request, counted by valgrind's callgrind.

Wall-clock figures on a shared 2-core machine move by 10-20 % from run to run; an instruction count does not
(callgrind counts the same for the same code and inputs whatever else runs). This answers "what does change X
cost per request" for A/B comparisons (``--hub-src`` another checkout) to well under 1 %, where req/s cannot.

The hub runs under callgrind with collection off; the receiver, Redis and this load generator run natively.
After onboarding and a warm-up, instrumentation is switched on for exactly ``--requests`` requests of one kind, then
the counters are dumped and read: instructions per request = total / requests (background tasks that run in that
window, the audit writer for one, are part of the cost). ``event_loop_per_request`` is the main thread's share:
the hub's event loop, without the SQLite thread (which runs on the other core, and whose per-commit work weighs
more under valgrind's slow pace than at full speed, see bench/README.md).

``--bare`` counts the bare aiohttp proxy of ``run.py`` on the same requests instead: hub / bare instructions is the
repeatable form of run.py's hub/bare ratio (which also counts the kernel's socket work, the same for both, and
Redis).

Usage: python bench/instructions.py [--kind get|put|put-bridged] [--requests 400] [--hub-src DIR] [--agreements]
       [--bare] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import hubproc
import onboard
from common import LOOPBACK, Child, free_port, python_argv, wait_http

LOCATION = ('{"country_code":"%s","party_id":"%s","id":"%s","publish":true,"address":"Stationsplein 1",'
            '"city":"Utrecht","country":"NLD","coordinates":{"latitude":"52.089","longitude":"5.110"},'
            '"time_zone":"Europe/Amsterdam","last_updated":"2024-01-01T00:00:00Z"}')


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=("get", "put", "put-bridged"), default="get")
    p.add_argument("--requests", type=int, default=400, help="requests counted (after the warm-up)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--hub-src", type=Path, help="count the hub of another checkout (A/B)")
    p.add_argument("--agreements", action="store_true",
                   help="run the hub with HUB_ROAMING_POLICY=agreements and the bench's agreements in force")
    p.add_argument("--bare", action="store_true",
                   help="count bench/bare_proxy.py (the reference run.py compares the hub with) instead of the hub")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args()


async def drive(session: aiohttp.ClientSession, url_base: str, auth: str, routing: dict[str, str], kind: str,
                owner: tuple[str, str], n: int, concurrency: int, offset: int) -> None:
    """``n`` requests, ``concurrency`` at a time; any answer but 200 / 1000 stops the count (it would be wrong)."""
    queue = list(range(offset, offset + n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            headers = {"Authorization": auth, "X-Request-ID": f"ir-{i}", "X-Correlation-ID": f"ir-{i}", **routing}
            if kind == "get":
                async with session.get(f"{url_base}/LOC{i % 50}", headers=headers) as resp:
                    text = await resp.text()
            else:
                body = (LOCATION % (*owner, f"LOC{i}")).encode()
                async with session.put(f"{url_base}/LOC{i}", data=body,
                                       headers={**headers, "Content-Type": "application/json"}) as resp:
                    text = await resp.text()
            if resp.status != 200 or '"status_code":1000' not in text.replace(" ", ""):
                raise RuntimeError(f"{kind} answered HTTP {resp.status}: {text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def total_instructions(out_dir: Path) -> tuple[int, int]:
    """Sums of the ``totals:`` lines of the dumps callgrind wrote (only the counted window was instrumented): of
    every thread, and of the main thread (the event loop's; callgrind writes a file per thread, ``-01`` the main
    thread's)."""
    total = main = 0
    for f in sorted(out_dir.glob("cg.out*")):
        for line in f.read_text(errors="replace").splitlines():
            if m := re.match(r"totals:\s+(\d+)", line):
                total += int(m.group(1))
                main += int(m.group(1)) if f.name.endswith("-01") else 0
    return total, main


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="hub-ir-"))
    children: list[Child] = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
    sender = onboard.SenderPlatform()
    prefix = hubproc.new_prefix()
    redis_url = hubproc.REDIS_URL if hubproc.redis_available() else None
    try:
        receiver_port, token_b = free_port(), "B-recv-" + os.urandom(8).hex()
        receiver_url = f"http://{LOOPBACK}:{receiver_port}"
        receiver = Child("receiver", python_argv("receiver.py", str(receiver_port), token_b), tmp)
        children.append(receiver)
        await receiver.start()
        await wait_http(f"{receiver_url}/healthz", 30, receiver)
        out_dir = tmp / "callgrind"
        out_dir.mkdir()
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_dir}/cg.out",
                    "--dump-line=no", "--compress-strings=no", "--separate-threads=yes"]
        if args.bare:
            return await count_bare(args, session, tmp, children, valgrind, receiver_url, out_dir)
        await sender.start()
        port = free_port()
        hub_url = f"http://{LOOPBACK}:{port}"
        extra = {"HUB_ROAMING_POLICY": "agreements"} if args.agreements else None
        hub = hubproc.hub_child(port, tmp, redis_url, prefix, args.hub_src, extra_env=extra)
        hub.argv = [*valgrind, *hub.argv]
        children.append(hub)
        await hub.start()
        await wait_http(f"{hub_url}/healthz", 600, hub)
        await onboard.connect(session, hub_url, hubproc.ADMIN_TOKEN, "Bench Receiver", onboard.RECEIVER_PARTIES,
                              f"{receiver_url}/ocpi/versions", token_b)
        if args.kind == "put-bridged":
            reg = await onboard.connect(session, hub_url, hubproc.ADMIN_TOKEN, "Bench Sender 2.3.0",
                                        onboard.SENDER_230_PARTIES, sender.versions_url, sender.token_b_230,
                                        version="2.3.0")
            owner = ("NL", "CPB")
        else:
            reg = await onboard.connect(session, hub_url, hubproc.ADMIN_TOKEN, "Bench Sender",
                                        onboard.SENDER_PARTIES, sender.versions_url, sender.token_b)
            owner = ("NL", "CPA")
        if args.agreements:
            await onboard.agree(session, hub_url, hubproc.ADMIN_TOKEN, onboard.AGREEMENTS)
        if args.kind == "get":
            base = urlsplit(reg.hub_endpoints[("locations", "SENDER")]).path
            frm, to = ("DE", "EMA"), ("NL", "CPR")
        else:
            base = urlsplit(reg.hub_endpoints[("locations", "RECEIVER")]).path + f"/{owner[0]}/{owner[1]}"
            frm, to = owner, ("DE", "EMR")
        routing = {"OCPI-from-country-code": frm[0], "OCPI-from-party-id": frm[1],
                   "OCPI-to-country-code": to[0], "OCPI-to-party-id": to[1]}
        (total, loop), elapsed = await count(args, session, hub.pid, hub_url + base, reg.auth, routing, owner,
                                             out_dir)
        return {"kind": args.kind, "requests": args.requests, "instructions_total": total,
                "instructions_per_request": round(total / args.requests),
                "event_loop_per_request": round(loop / args.requests), "hub_src": str(args.hub_src or "."),
                "queues": "redis" if redis_url else "fakeredis", "roaming_policy": "agreements" if args.agreements
                else "open", "seconds_under_valgrind": round(elapsed, 1)}
    finally:
        await session.close()
        await sender.stop()
        for child in reversed(children):
            await child.stop()
        if redis_url:
            hubproc.cleanup_prefix(redis_url, prefix)


async def count(args: argparse.Namespace, session: aiohttp.ClientSession, pid: int, url_base: str, auth: str,
                routing: dict[str, str], owner: tuple[str, str], out_dir: Path) -> tuple[tuple[int, int], float]:
    """Warm up, then the instructions of ``pid`` over exactly ``args.requests`` requests (all threads', the event
    loop's), and the seconds it took."""
    await drive(session, url_base, auth, routing, args.kind, owner, args.warmup, args.concurrency, 0)
    await asyncio.sleep(1.0)  # the warm-up's audit batch and acks are written before counting starts
    callgrind(pid, "-z")  # zero, then count
    callgrind(pid, "-i", "on")
    started = time.monotonic()
    await drive(session, url_base, auth, routing, args.kind, owner, args.requests, args.concurrency, args.warmup)
    await asyncio.sleep(0.5)  # their audit batch (every 200 ms) is part of their cost
    callgrind(pid, "-i", "off")
    callgrind(pid, "-d")
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)
    total, loop = total_instructions(out_dir)
    if total == 0 or loop == 0:
        raise RuntimeError(f"no callgrind counts found in {out_dir}")
    return (total, loop), elapsed


async def count_bare(args: argparse.Namespace, session: aiohttp.ClientSession, tmp: Path, children: list[Child],
                     valgrind: list[str], receiver_url: str, out_dir: Path) -> dict[str, object]:
    """The same requests through the bare proxy: it forwards path, headers and body to the receiver as they are."""
    port = free_port()
    bare = Child("bare_proxy", [*valgrind, *python_argv("bare_proxy.py", str(port), receiver_url)], tmp)
    children.append(bare)
    await bare.start()
    await wait_http(f"http://{LOOPBACK}:{port}/healthz", 600, bare)  # the receiver's, through the proxy
    if args.kind == "get":
        path, frm, to = "/ocpi/2.2.1/sender/locations", ("DE", "EMA"), ("NL", "CPR")
    else:
        path, frm, to = "/ocpi/2.2.1/receiver/locations/NL/CPA", ("NL", "CPA"), ("DE", "EMR")
    routing = {"OCPI-from-country-code": frm[0], "OCPI-from-party-id": frm[1],
               "OCPI-to-country-code": to[0], "OCPI-to-party-id": to[1]}
    (total, loop), elapsed = await count(args, session, bare.pid, f"http://{LOOPBACK}:{port}{path}", "Token bench",
                                         routing, ("NL", "CPA"), out_dir)
    return {"kind": args.kind, "requests": args.requests, "instructions_total": total,
            "instructions_per_request": round(total / args.requests),
            "event_loop_per_request": round(loop / args.requests), "measured": "bare_proxy",
            "seconds_under_valgrind": round(elapsed, 1)}


def main() -> int:
    args = parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
