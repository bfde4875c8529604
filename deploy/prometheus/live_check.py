#!/usr/bin/env python3
"""Live check: every dashboard query and alert rule, evaluated by a real Prometheus scraping a real hub.

The file checks (tests/test_deploy.py, promtool) prove the dashboard and the rules are well-formed and name
exported metrics; only a real scrape proves each panel *shows something*: label names, `_total`/`_bucket`
suffixes, `le` values and aggregations must match what the hub exports. So this script

1. finds `prometheus` and `promtool` (as root it tries Debian's package; without them: SKIP, exit 0),
2. starts `ocpi-hub serve` on a free loopback port (embedded store, or `--redis` with a unique key prefix that
   is deleted afterwards) and a Prometheus scraping it every second with deploy/prometheus/alerts.yml loaded,
3. registers a fake CPO and eMSP (tests/partners.py servers, bench/onboard.py handshake) and a PLANNED third
   platform, then drives forwarded requests, broadcasts, unknown and not-connected receivers, timeouts, a
   receiver without OCPI envelope, a retried and a dead-lettered broadcast, so every series a panel uses exists,
4. runs `promtool check rules` / `check config`, evaluates every panel target's expr (Grafana variables
   substituted) and requires series, evaluates every alert expr (syntax only: empty is fine) and checks the
   rule group is loaded and healthy, and resolves the template variables' label_values() queries.

Everything listens on 127.0.0.1; every child is stopped by its own process group in `finally`; temp dirs are
removed. Exit 0 = all good or SKIP, 1 = a check failed, 2 = the harness itself broke (hub or Prometheus did not
come up). Run with the project's venv: `.venv/bin/python deploy/prometheus/live_check.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "ocpi-hub.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
# bench/ modules import each other as top-level modules (`from common import ...`); tests/ is a package.
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import hubproc  # noqa: E402
import onboard  # noqa: E402
from common import LOOPBACK, Child, free_port, wait_http  # noqa: E402

from tests.partners import FakePartner, Party, Received, envelope  # noqa: E402

BUDGET = 100.0  # seconds for everything after the tools are found: the whole run stays under 2 minutes
FORWARD_TIMEOUT = 1.0  # HUB_FORWARD_TIMEOUT of the hub under test: a receiver sleeping longer gives 4002
TRAFFIC_SECONDS = 6.0
# Grafana's built-in variables, as a 15 s-scrape Grafana would expand them; template variables become ".*"
# (their "All" value, allValue in the dashboard).
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000", "__range": "5m",
            "__range_s": "300", "__range_ms": "300000"}
VAR_RE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?:(.*?)\s*,\s*)?(\w+)\s*\)\s*$", re.DOTALL)

CPO = Party("NL", "CPA", "CPO")
EMSP = Party("DE", "EMA", "EMSP")
PLANNED = Party("NL", "GAM", "CPO")  # reserved by an admin, never registered: requests to it are not_connected
UNKNOWN = Party("XX", "ZZZ", "CPO")  # no platform hosts it: unknown_receiver
HUB = Party("NL", "HUB", "HUB")


class CheckFailed(Exception):
    """A check of the dashboard, the rules or the config failed: exit 1 with the message."""


# --- tools ----------------------------------------------------------------------------------------------------

def find_tools(allow_apt: bool) -> tuple[str, str] | None:
    """prometheus and promtool on PATH, installing Debian's package when allowed; None when not to be had."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if all(found):
        return found[0] or "", found[1] or ""
    if allow_apt and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install_prometheus()
        found = shutil.which("prometheus"), shutil.which("promtool")
        if all(found):
            return found[0] or "", found[1] or ""
    return None


def _prometheus_pids() -> set[int]:
    """Pids of running /usr/bin/prometheus processes (to stop only one the package itself started)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(proc / "exe").endswith("/prometheus"):
                    pids.add(int(proc.name))
    return pids


def apt_install_prometheus() -> None:
    """`apt-get install prometheus` (update and retry once), never leaving the package's own service running.

    A policy-rc.d exiting 101 keeps invoke-rc.d from starting the service; should a prometheus appear anyway
    (systemd ignoring the policy), the one that was not running before is stopped. Recommends (node exporter)
    are not installed: they would be services too.
    """
    print("prometheus/promtool missing: apt-get install -y --no-install-recommends prometheus", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    before = _prometheus_pids()
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
    try:
        if own_policy:
            policy.write_text("#!/bin/sh\n# live_check.py: no service starts during this install\nexit 101\n")
            policy.chmod(0o755)
        for step in ([install], [["apt-get", "update", "-qq"], install]):
            if all(_run_quiet(argv, env, timeout=180) for argv in step):
                break
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
        started = _prometheus_pids() - before
        if started:
            _run_quiet(["service", "prometheus", "stop"], env, timeout=30)
            for pid in started & _prometheus_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 15)


def _run_quiet(argv: list[str], env: dict[str, str], timeout: float) -> bool:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  {' '.join(argv)}: {exc}")
        return False
    if done.returncode != 0:
        print(f"  {' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.returncode == 0


def promtool(tool: str, *args: str) -> None:
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}")
    print(f"ok: promtool {' '.join(Path(a).name if a.startswith('/') else a for a in args)}")


# --- what to evaluate -----------------------------------------------------------------------------------------

@dataclass
class Query:
    """One PromQL expression and where it comes from (panel title / refId, or alert name)."""

    where: str
    expr: str
    promql: str = ""


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def substitute(expr: str, template_vars: set[str]) -> str:
    """Grafana variables -> what Grafana would send with "All" selected; unknown variables are an error."""
    def repl(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in template_vars:
            return ".*"
        raise CheckFailed(f"unknown Grafana variable ${name} in: {expr}")
    return VAR_RE.sub(repl, expr)


def dashboard_queries(dashboard: dict[str, Any]) -> tuple[list[Query], list[tuple[str, str | None, str]]]:
    """(panel targets, template variables as (name, series selector or None, label))."""
    variables: list[tuple[str, str | None, str]] = []
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        if var.get("type") != "query":
            continue
        match = LABEL_VALUES_RE.match(text)
        if match is None:
            raise CheckFailed(f"template variable {var['name']}: only label_values() is checked, got {text!r}")
        variables.append((var["name"], match.group(1) or None, match.group(2)))
    names = {v[0] for v in variables}
    queries = []
    for panel in walk_panels(dashboard["panels"]):
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            raise CheckFailed(f"panel {panel.get('title')!r} has no targets")
        for t in targets:
            if not t.get("expr", "").strip():
                raise CheckFailed(f"panel {panel.get('title')!r} target {t.get('refId')} has no expr")
            where = f"panel {panel['title']!r} {t.get('refId', '?')}"
            queries.append(Query(where, t["expr"], substitute(t["expr"], names)))
    return queries, variables


def alert_queries() -> list[Query]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [Query(f"rule {r.get('alert') or r.get('record')}", r["expr"], r["expr"])
            for g in groups for r in g["rules"]]


# --- the processes --------------------------------------------------------------------------------------------

@dataclass
class Harness:
    """The hub, Prometheus and the fake partners, with what is needed to stop and remove them."""

    tmp: Path
    redis_url: str | None
    prefix: str = field(default_factory=hubproc.new_prefix)
    hub_port: int = field(default_factory=free_port)
    prom_port: int = field(default_factory=free_port)
    children: list[Child] = field(default_factory=list)
    partners: list[FakePartner] = field(default_factory=list)

    metrics_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def metrics_token_file(self) -> Path:
        return self.tmp / "metrics-token"

    @property
    def hub_url(self) -> str:
        return f"http://{LOOPBACK}:{self.hub_port}"

    @property
    def prom_url(self) -> str:
        return f"http://{LOOPBACK}:{self.prom_port}"

    def prometheus_config(self) -> Path:
        """Scrape the hub every second as job ocpi-hub (the job name alerts.yml selects on), with the rules."""
        path = self.tmp / "prometheus.yml"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            # As deploy/prometheus/prometheus.yml: the hub requires HUB_METRICS_TOKEN, Prometheus reads it from a file.
            "scrape_configs": [{"job_name": "ocpi-hub", "metrics_path": "/metrics",
                                "authorization": {"type": "Bearer", "credentials_file": str(self.metrics_token_file)},
                                "static_configs": [{"targets": [f"{LOOPBACK}:{self.hub_port}"]}]}],
        }
        self.metrics_token_file.write_text(self.metrics_token)
        self.metrics_token_file.chmod(0o600)
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    async def start(self, prometheus: str, config: Path) -> None:
        hub = hubproc.hub_child(self.hub_port, self.tmp, self.redis_url, self.prefix)
        assert hub.env is not None
        hub.env["HUB_FORWARD_TIMEOUT"] = str(FORWARD_TIMEOUT)
        hub.env["HUB_METRICS_TOKEN"] = self.metrics_token
        prom = Child("prometheus", [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={self.tmp / 'tsdb'}",
            f"--web.listen-address={LOOPBACK}:{self.prom_port}", "--log.level=warn",
            "--storage.tsdb.retention.time=1h",
        ], self.tmp)
        for child in (hub, prom):
            self.children.append(child)
            await child.start()
        await asyncio.gather(wait_http(f"{self.hub_url}/healthz", 30, hub),
                             wait_http(f"{self.prom_url}/-/ready", 30, prom))
        print(f"hub (pid {hub.pid}) on {self.hub_url}, {'Redis ' + self.redis_url if self.redis_url else 'embedded'}"
              f"; prometheus (pid {prom.pid}) on {self.prom_url}", flush=True)

    async def stop(self) -> None:
        for partner in self.partners:
            with contextlib.suppress(Exception):
                await partner.stop()
        for child in reversed(self.children):
            await child.stop(grace=5.0)
        if self.redis_url:
            with contextlib.suppress(Exception):
                hubproc.cleanup_prefix(self.redis_url, self.prefix)


# --- traffic --------------------------------------------------------------------------------------------------

async def emsp_responder(request: web.Request, rec: Received) -> web.StreamResponse:
    """The eMSP's answers, chosen by the object id in the path: the error cases the dashboard must show."""
    object_id = rec.path.rstrip("/").rsplit("/", 1)[-1]
    if object_id.startswith("SLOW"):  # longer than HUB_FORWARD_TIMEOUT: timeout (4002)
        await asyncio.sleep(FORWARD_TIMEOUT + 1.0)
    elif object_id.startswith("NOENV"):  # not OCPI: hub_error (4000)
        return web.Response(status=502, text="bad gateway")
    elif object_id.startswith("RETRY"):  # transient: the broadcast is retried
        return web.json_response(envelope(status_code=3000, message="try later"), status=503)
    elif object_id.startswith("DEAD"):  # permanent: the broadcast becomes a dead letter
        return web.json_response(envelope(status_code=2001, message="invalid object"), status=400)
    return web.json_response(envelope())


def location(object_id: str) -> dict[str, Any]:
    return {"country_code": CPO.country_code, "party_id": CPO.party_id, "id": object_id, "publish": True,
            "address": "Stationsplein 1", "city": "Utrecht", "country": "NLD",
            "coordinates": {"latitude": "52.089", "longitude": "5.110"}, "time_zone": "Europe/Amsterdam",
            "last_updated": "2024-01-01T00:00:00Z"}


async def onboard_partners(h: Harness, session: aiohttp.ClientSession) -> tuple[FakePartner, FakePartner]:
    """A CPO and an eMSP through the real handshake, plus a PLANNED platform (registrations, platforms gauges)."""
    cpo = FakePartner("Alpha", [CPO], modules={"locations": ("SENDER",), "cdrs": ("SENDER",)})
    emsp = FakePartner("Beta", [EMSP], modules={"locations": ("RECEIVER",), "cdrs": ("RECEIVER",)},
                       responder=emsp_responder)
    for partner in (cpo, emsp):
        h.partners.append(partner)
        await partner.start()
        reg = await onboard.connect(session, h.hub_url, hubproc.ADMIN_TOKEN, partner.name,
                                    [(p.country_code, p.party_id, p.role) for p in partner.parties],
                                    partner.versions_url, partner.token_b)
        partner.token_c, partner.hub_endpoints = reg.token_c, reg.hub_endpoints
        if partner is emsp:  # CDRs to it are stored and forwarded: the store-and-forward panels' series
            async with session.put(f"{h.hub_url}/admin/platforms/{reg.platform_id}/store-and-forward",
                                   json={"modules": ["cdrs"]},
                                   headers={"Authorization": f"Bearer {hubproc.ADMIN_TOKEN}"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"store-and-forward opt-in: HTTP {resp.status} {await resp.text()}")
    admin = {"Authorization": f"Bearer {hubproc.ADMIN_TOKEN}"}
    roles = [{"country_code": PLANNED.country_code, "party_id": PLANNED.party_id, "role": PLANNED.role}]
    async with session.post(f"{h.hub_url}/admin/platforms", json={"name": "Gamma", "roles": roles},
                            headers=admin) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating the PLANNED platform: HTTP {resp.status} {await resp.text()}")
    return cpo, emsp


async def drive_traffic(session: aiohttp.ClientSession, cpo: FakePartner, emsp: FakePartner) -> dict[str, int]:
    """TRAFFIC_SECONDS of mixed requests while Prometheus scrapes; returns HTTP status counts per case."""
    seen: dict[str, int] = {}

    async def one(case: str, partner: FakePartner, method: str, role: str, tail: str, to: Party,
                  body: Any = None) -> None:
        status, _, doc = await partner.call(session, method, "locations", role, tail, to=to, json=body)
        code = doc.get("status_code") if isinstance(doc, dict) else None
        key = f"{case} {status}/{code}"
        seen[key] = seen.get(key, 0) + 1

    cc, pid = CPO.country_code, CPO.party_id
    # Once: a broadcast the eMSP refuses for good (dead letter) and one it fails transiently (retried).
    await one("broadcast-dead", cpo, "PUT", "RECEIVER", f"{cc}/{pid}/DEAD1", HUB, location("DEAD1"))
    await one("broadcast-retry", cpo, "PUT", "RECEIVER", f"{cc}/{pid}/RETRY1", HUB, location("RETRY1"))
    # Once: a CDR accepted for later delivery (the eMSP opted in for CDRs), delivered at once.
    status, _, doc = await cpo.call(session, "POST", "cdrs", "RECEIVER", "", to=EMSP,
                                    json={"country_code": cc, "party_id": pid, "id": "CDR1"})
    key = f"store-and-forward {status}/{doc.get('status_code') if isinstance(doc, dict) else None}"
    seen[key] = seen.get(key, 0) + 1
    deadline = time.monotonic() + TRAFFIC_SECONDS
    i = 0
    while time.monotonic() < deadline:
        i += 1
        cases = [
            one("forward-put", cpo, "PUT", "RECEIVER", f"{cc}/{pid}/L{i}", EMSP, location(f"L{i}")),
            one("forward-get", emsp, "GET", "SENDER", f"{cc}/{pid}/L{i}", CPO),
            one("broadcast", cpo, "PUT", "RECEIVER", f"{cc}/{pid}/B{i}", HUB, location(f"B{i}")),
            one("unknown-receiver", emsp, "GET", "SENDER", f"{UNKNOWN.country_code}/{UNKNOWN.party_id}/X", UNKNOWN),
            one("not-connected", emsp, "GET", "SENDER", f"{PLANNED.country_code}/{PLANNED.party_id}/X", PLANNED),
            one("no-envelope", cpo, "PUT", "RECEIVER", f"{cc}/{pid}/NOENV{i}", EMSP, location(f"NOENV{i}")),
        ]
        if i % 5 == 1:
            cases.append(one("timeout", cpo, "PUT", "RECEIVER", f"{cc}/{pid}/SLOW{i}", EMSP, location(f"SLOW{i}")))
        await asyncio.gather(*cases)
        await asyncio.sleep(0.1)
    return seen


# --- Prometheus API -------------------------------------------------------------------------------------------

class Prom:
    """The few HTTP API calls the check needs; an API error becomes CheckFailed with Prometheus' message."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        async with self.session.get(f"{self.base}{path}", params=params) as resp:
            doc = await resp.json(content_type=None)
        if doc.get("status") != "success":
            raise CheckFailed(f"{doc.get('errorType', 'error')}: {doc.get('error', doc)}")
        return doc["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/query", {"query": promql})
        result = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [{"value": result}]

    async def series(self, selector: str) -> list[dict[str, str]]:
        start = str(time.time() - 3600)
        return list(await self._get("/api/v1/series", {"match[]": selector, "start": start}))

    async def label_values(self, label: str) -> list[str]:
        return list(await self._get(f"/api/v1/label/{label}/values", {}))

    async def rules(self) -> list[dict[str, Any]]:
        return list((await self._get("/api/v1/rules", {}))["groups"])


async def poll_until(what: str, check: Callable[[], Awaitable[bool]], limit: float) -> None:
    """Poll an async predicate until true, or fail saying what did not happen."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(CheckFailed, aiohttp.ClientError):
            if await check():
                return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"timed out after {limit:.0f}s waiting for {what}")


async def check_queries(prom: Prom, queries: list[Query], limit: float) -> tuple[dict[str, int], dict[str, int]]:
    """Every query must evaluate and return series; empty ones are retried until ``limit`` (gauges refresh
    every 5 s, rates need two scrapes), and so are all-NaN ones, which are accepted at the end (a panel with
    series but no number yet is still a valid query). Returns series and NaN-series counts per query."""
    counts: dict[str, int] = {}
    nans: dict[str, int] = {}
    errors: list[str] = []
    pending = list(queries)
    deadline = time.monotonic() + limit
    while pending:
        still = []
        for q in pending:
            try:
                result = await prom.query(q.promql)
            except CheckFailed as exc:
                errors.append(f"{q.where}: {exc}\n    {q.promql}")
                continue
            numeric = [r for r in result if not math.isnan(float(r["value"][1]))]
            if numeric or (result and time.monotonic() > deadline):
                counts[q.where], nans[q.where] = len(result), len(result) - len(numeric)
            else:  # nothing yet, or only NaN (a quantile or ratio over a window without samples): wait
                still.append(q)
        pending = still
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    errors += [f"{q.where}: no series\n    {q.promql}" for q in pending]
    if errors:
        raise CheckFailed(f"{len(errors)} of {len(queries)} dashboard queries failed:\n  " + "\n  ".join(errors))
    return counts, nans


async def check_alerts(prom: Prom, rules: list[Query]) -> int:
    """Each alert expr evaluates (empty is fine) and Prometheus loaded and evaluated the group healthily."""
    errors = []
    for q in rules:
        try:
            await prom.query(q.promql)
        except CheckFailed as exc:
            errors.append(f"{q.where}: {exc}")

    async def evaluated() -> bool:
        loaded = [r for g in await prom.rules() for r in g["rules"]]
        return len(loaded) >= len(rules) and all(r.get("health") != "unknown" for r in loaded)

    await poll_until("Prometheus to evaluate the alert rules", evaluated, 10)
    loaded = {r["name"]: r for g in await prom.rules() for r in g["rules"]}
    for q in rules:
        rule = loaded.get(q.where.removeprefix("rule "))
        if rule is None:
            errors.append(f"{q.where}: not loaded by Prometheus")
        elif rule.get("health") != "ok":
            errors.append(f"{q.where}: health {rule.get('health')}: {rule.get('lastError')}")
    if errors:
        raise CheckFailed("alert rules:\n  " + "\n  ".join(errors))
    return len(rules)


async def check_variables(prom: Prom, variables: list[tuple[str, str | None, str]]) -> list[str]:
    """label_values(selector, label): the series the selector matches must carry that label."""
    lines = []
    for name, selector, label in variables:
        if selector is None:
            values = sorted(await prom.label_values(label))
        else:
            values = sorted({s[label] for s in await prom.series(selector) if label in s})
        if not values:
            raise CheckFailed(f"template variable ${name}: label_values({selector}, {label}) has no values")
        lines.append(f"${name}: {len(values)} values ({', '.join(values[:6])}{', ...' if len(values) > 6 else ''})")
    return lines


# --- main -----------------------------------------------------------------------------------------------------

async def run(prometheus: str, promtool_bin: str, redis_url: str | None, dashboard_path: Path,
              queries: list[Query], variables: list[tuple[str, str | None, str]]) -> None:
    """Start hub and Prometheus, drive traffic, then every check; the processes and temp dir go in ``finally``."""
    rules = alert_queries()
    promtool(promtool_bin, "check", "rules", str(ALERTS))
    tmp = Path(tempfile.mkdtemp(prefix="ocpi-live-check-"))
    h = Harness(tmp, redis_url)
    try:
        config = h.prometheus_config()
        promtool(promtool_bin, "check", "config", str(config))
        await h.start(prometheus, config)
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT + 10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            prom = Prom(session, h.prom_url)

            async def hub_scraped() -> bool:
                return bool(await prom.query('up{job="ocpi-hub"} == 1'))

            await poll_until("the first scrape of the hub", hub_scraped, 15)
            async with session.get(f"{h.hub_url}/metrics") as resp:
                if resp.status != 401:
                    raise CheckFailed(f"/metrics without the bearer token answered {resp.status}, not 401")
            print("ok: Prometheus scrapes with HUB_METRICS_TOKEN; /metrics without it is 401", flush=True)
            cpo, emsp = await onboard_partners(h, session)
            started = time.monotonic()
            seen = await drive_traffic(session, cpo, emsp)
            total = sum(seen.values())
            print(f"traffic: {total} requests in {time.monotonic() - started:.1f}s: "
                  + ", ".join(f"{k} x{v}" for k, v in sorted(seen.items())), flush=True)
            counts, nans = await check_queries(prom, queries, limit=20)
            print(f"ok: {len(queries)} dashboard queries from {_rel(dashboard_path)} returned series")
            for q in queries:
                note = f"  ({nans[q.where]} NaN)" if nans[q.where] else ""
                print(f"  {counts[q.where]:3d} series  {q.where}{note}")
            for line in await check_variables(prom, variables):
                print(f"ok: template variable {line}")
            n_rules = await check_alerts(prom, rules)
            print(f"ok: {n_rules} alert exprs of {ALERTS.relative_to(REPO)} evaluate; Prometheus loaded them, "
                  "health ok")
        print(f"live_check: {len(queries)} queries checked, all returned series; {len(variables)} template "
              f"variables resolved; {n_rules} alert rules evaluated")
    finally:
        await h.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis", nargs="?", const=hubproc.REDIS_URL, default=None, metavar="URL",
                        help=f"run the hub on real Redis (default URL {hubproc.REDIS_URL}) under a unique key "
                             "prefix deleted afterwards; default: embedded store")
    parser.add_argument("--no-apt", action="store_true",
                        help="never apt-get install prometheus (also LIVE_CHECK_NO_APT=1)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD,
                        help=f"the Grafana dashboard JSON to check (default {_rel(DASHBOARD)})")
    args = parser.parse_args()
    allow_apt = not (args.no_apt or os.environ.get("LIVE_CHECK_NO_APT") == "1")
    tools = find_tools(allow_apt)
    if tools is None:
        print("SKIP: live_check: prometheus/promtool not installed and not installable here (Debian package "
              "prometheus; installed automatically only as root with apt-get)")
        return 0
    if args.redis and not hubproc.redis_available(args.redis):
        print(f"live_check: no Redis answers at {args.redis}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        dashboard_path = args.dashboard.resolve()
        queries, variables = dashboard_queries(json.loads(dashboard_path.read_text()))
        asyncio.run(asyncio.wait_for(run(*tools, args.redis, dashboard_path, queries, variables), timeout=BUDGET))
    except CheckFailed as exc:
        print(f"FAILED: {exc}")
        return 1
    except TimeoutError:
        print(f"ERROR: live_check did not finish within {BUDGET:.0f}s", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, aiohttp.ClientError) as exc:
        print(f"ERROR: live_check harness: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"live_check: passed in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
