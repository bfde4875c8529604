"""The ``ocpi-hub`` admin commands: thin clients of the admin API that print JSON.

``HUB_URL`` (default: ``http://127.0.0.1:<HUB_PORT>``) says where the hub runs; ``HUB_ADMIN_TOKEN``, or the
token a local ``serve`` kept (``hub/admin_token.py``), opens it. A blocking HTTP client is right here: the CLI
runs no event loop. Filters with a fixed set of values are checked here too, so a typo is an error listing
the valid values, not an empty list.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from hub import admin_token
from hub.admin import PLATFORM_STATUSES
from hub.audit import AUDIT_MODULES, OUTCOMES
from hub.settings import Settings, SettingsError, load_settings
from routing import store_forward


class CliError(Exception):
    pass


def _token(settings: Settings) -> str:
    try:
        return admin_token.for_cli(settings)
    except admin_token.AdminTokenError as exc:
        raise CliError(str(exc)) from None


def call(settings: Settings, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    """One admin API request; every failure becomes a CliError with a one-line reason, never a traceback."""
    data = json.dumps(body).encode() if body is not None else None
    raw = call_raw(settings, method, path, data, "application/json", timeout)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise CliError(f"{settings.url} did not answer JSON: is HUB_URL the hub?") from None


def call_raw(settings: Settings, method: str, path: str, data: bytes | None = None,
             content_type: str = "application/json", timeout: float = 30.0) -> bytes:
    """An admin API request whose body and answer are bytes (CSV import and export)."""
    try:
        req = urllib.request.Request(
            settings.url.rstrip("/") + path, data=data, method=method,
            headers={"Authorization": f"Bearer {_token(settings)}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        raise CliError(f"hub answered HTTP {exc.code}: {_error_message(exc.read())}") from None
    except urllib.error.URLError as exc:
        raise CliError(f"cannot reach the hub at {settings.url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise CliError(f"cannot reach the hub at {settings.url}: {exc or type(exc).__name__}") from None
    except ValueError as exc:  # urllib and http.client refuse a malformed URL with ValueError
        raise CliError(f"invalid HUB_URL {settings.url!r}: {exc}") from None


def _error_message(raw: bytes) -> str:
    """The admin API's ``{"error": ...}``, or the raw text of whatever else answered."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()[:200] or "(empty answer)"
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        details = doc.get("errors")
        if isinstance(details, list) and details:  # e.g. every bad row of a CSV import
            return str(doc["error"]) + "".join(f"\n  {d}" for d in details)
        return str(doc["error"])
    return json.dumps(doc)[:200]


def parse_role(text: str) -> dict[str, str]:
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"role must be CC:PID:ROLE, e.g. NL:CPA:CPO (got {text!r})")
    cc, pid, role = parts
    return {"country_code": cc, "party_id": pid, "role": role}


def _store_forward_module(value: str) -> str:
    """One module, judged by the admin API's own rule (routing/store_forward.check_modules)."""
    try:
        store_forward.check_modules([value])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid choice: {exc}") from None
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
    return value


def _rate_limit(settings: Settings, args: argparse.Namespace) -> Any:
    path = f"/admin/platforms/{args.id}/rate-limit"
    if args.default:
        return call(settings, "DELETE", path)
    body: dict[str, Any] = {"rps": args.rps}
    if args.burst is not None:
        body["burst"] = args.burst
    return call(settings, "PUT", path, body)


def add_admin_commands(sub: Any) -> None:
    plat = sub.add_parser("platforms", help="onboard and manage partner platforms",
                          description="Onboard and manage partner platforms (CPOs, eMSPs, ...).")
    psub = plat.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = psub.add_parser("add", help="reserve parties for a new platform and issue its Token A",
                          description="Reserve parties for a new platform and print its Token A and the hub's "
                                      "versions URL, to hand to the partner.")
    add.add_argument("--name", required=True, help="the platform's display name")
    add.add_argument("--role", action="append", type=parse_role, required=True, metavar="CC:PID:ROLE",
                     help="a party the platform may claim, e.g. NL:CPA:CPO (repeat for more)")
    add.add_argument("--allowed-host", action="append", default=[], metavar="HOST",
                     help="a host besides its registered ones on which it may hand over URLs (repeatable)")
    lst = psub.add_parser("list", help="all platforms, or those with one status")
    lst.add_argument("--status", choices=PLATFORM_STATUSES, help="only platforms with this status")
    helps = {"show": "one platform", "suspend": "refuse the platform's traffic until it is resumed",
             "resume": "undo a suspend (a platform that never registered gets a fresh Token A)",
             "remove": "offboard: its tokens die and messages queued for it are dropped",
             "rotate": "renew the credentials with a registered platform (the hub sends credentials PUT)"}
    for action, text in helps.items():
        p = psub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("id", help="platform id (see 'platforms list')")
    hosts = psub.add_parser("allowed-hosts", help="replace the hosts besides its registered ones on which a "
                            "platform may hand over URLs (response_url, Link, Location); none clears the list")
    hosts.add_argument("id", help="platform id (see 'platforms list')")
    hosts.add_argument("hosts", nargs="*", metavar="HOST", help="host names or IP addresses")
    rate = psub.add_parser("rate-limit", help="set a platform's request rate (hub-wide), or --default")
    rate.add_argument("id", help="platform id (see 'platforms list')")
    how = rate.add_mutually_exclusive_group(required=True)
    how.add_argument("--rps", type=_positive_float, help="requests per second on average")
    how.add_argument("--default", action="store_true", help="back to HUB_RATE_LIMIT_RPS / HUB_RATE_LIMIT_BURST")
    rate.add_argument("--burst", type=int, help="requests at once above the rate (default: 2 x rps)")
    con = psub.add_parser("connect", help="register the hub with a partner that issued a Token A",
                          description="Register the hub with a partner that issued a Token A to it: the hub reads "
                                      "the partner's versions, sends its own credentials (Token B) and keeps the "
                                      "Token C the partner answers with. The platform is then CONNECTED.")
    con.add_argument("--name", required=True, help="the platform's display name")
    con.add_argument("--versions-url", required=True, help="the partner's OCPI versions URL")
    con.add_argument("--token-a", required=True, help="the Token A the partner issued to the hub")
    con.add_argument("--role", choices=("CPO", "EMSP"), type=str.upper,
                     help="the partner's party role; needed when it speaks only OCPI 2.1.1, whose credentials "
                          "carry no role")
    policy = psub.add_parser("roaming-policy", help="a platform's own roaming policy, or the hub-wide default",
                             description="Set a platform's own roaming policy (docs/agreements.md): 'agreements' "
                                         "checks every exchange with its parties against roaming agreements, "
                                         "'open' lets them exchange with every party that is open too, 'default' "
                                         "follows HUB_ROAMING_POLICY.")
    policy.add_argument("id", help="platform id (see 'platforms list')")
    policy.add_argument("policy", choices=("open", "agreements", "default"), help="the policy")
    stored = psub.add_parser(
        "store-and-forward", help="the modules whose messages to a platform the hub accepts for later delivery",
        description="Set the modules whose messages to this platform the hub accepts for later delivery and "
                    "retries for HUB_STORE_FORWARD_WINDOW (docs/store-and-forward.md): pushes of cdrs, sessions, "
                    "locations, tariffs, tokens; results of commands, chargingprofiles. No module turns it off.")
    stored.add_argument("id", help="platform id (see 'platforms list')")
    # type=, not choices=: argparse checks an empty "*" list against choices too, and no module is valid here
    stored.add_argument("modules", nargs="*", metavar="MODULE", type=_store_forward_module,
                        help="one of: " + ", ".join(sorted(store_forward.MODULES)) + "; none turns it off")
    add_agreement_commands(sub)
    queues_help = ("depth, in-flight and oldest message age per receiver; per module what store-and-forward "
                   "holds and did")
    sub.add_parser("queues", help=queues_help, description=queues_help[0].upper() + queues_help[1:] + ".")
    deliveries = sub.add_parser("deliveries", help="where the messages a sender sent under one request id stand "
                                                   "(store-and-forward)",
                                description="Where the messages a sender sent under one X-Request-ID stand "
                                            "(store-and-forward, docs/store-and-forward.md): queued, retrying "
                                            "(attempts, last error), delivered, dead-lettered or superseded, per "
                                            "receiver.")
    deliveries.add_argument("request_id", metavar="REQUEST_ID", help="the sender's X-Request-ID")
    audit = sub.add_parser("audit", help="search the audit trail, newest first (one message across hops: "
                                         "--correlation-id)",
                           description="Search the audit trail (OCPI traffic and admin actions), newest first.")
    audit.add_argument("--correlation-id", help="one message across all its hops")
    audit.add_argument("--request-id", help="one request")
    audit.add_argument("--platform", help="platform id: its traffic, and admin actions on it")
    audit.add_argument("--party", metavar="CC:PID", help="FROM or TO party, e.g. NL:CPA")
    audit.add_argument("--module", choices=AUDIT_MODULES, help="OCPI module, or 'admin' for operator actions")
    audit.add_argument("--outcome", choices=OUTCOMES, help="what the hub did with the request")
    audit.add_argument("--since", metavar="TIME", help="from this time on (ISO 8601, e.g. 2024-03-01T12:00:00Z)")
    audit.add_argument("--until", metavar="TIME", help="before this time (ISO 8601)")
    audit.add_argument("--limit", type=int, default=100, help="at most this many records (default 100, max 1000)")
    dead = sub.add_parser("dead-letters", help="pushes that could not be delivered",
                          description="Hub-originated pushes that could not be delivered within the retry window.")
    dsub = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlist = dsub.add_parser("list", help="dead letters, oldest first")
    dlist.add_argument("--receiver", help="platform id of the receiver")
    dlist.add_argument("--limit", type=int, default=100, help="at most this many (default 100, max 1000)")
    for action, text in (("replay", "queue a dead letter again"), ("delete", "drop a dead letter")):
        d = dsub.add_parser(action, help=text)
        d.add_argument("id", help="dead letter id (see 'dead-letters list')")


def add_agreement_commands(sub: Any) -> None:
    agr = sub.add_parser("agreements", help="roaming agreements: which parties may exchange which modules",
                         description="Roaming agreements (docs/agreements.md): under HUB_ROAMING_POLICY=agreements "
                                     "two parties exchange a module only while an agreement covers it.")
    asub = agr.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = asub.add_parser("add", help="add an agreement between two parties",
                          description="Add an agreement between two parties; it holds on every worker once this "
                                      "command returns.")
    add.add_argument("--party-a", required=True, metavar="CC:PID:ROLE", help="one party, e.g. NL:CPA:CPO")
    add.add_argument("--party-b", required=True, metavar="CC:PID:ROLE", help="the other party, e.g. DE:EMB:EMSP")
    add.add_argument("--module", action="append", default=[], metavar="MODULE",
                     help="a module it covers, e.g. cdrs (repeatable; none or '*': every functional module)")
    add.add_argument("--valid-from", metavar="TIME", help="start (ISO 8601, e.g. 2025-01-01T00:00:00Z; default now)")
    add.add_argument("--valid-until", metavar="TIME", help="end, exclusive (ISO 8601; default: open-ended)")
    add.add_argument("--reference", default="", help="free text, e.g. the contract's number")
    add.add_argument("--id", help="the agreement's id (default: generated)")
    add.add_argument("--suspended", action="store_true", help="add it suspended (resume it later)")
    lst = asub.add_parser("list", help="agreements, oldest first", description="List agreements, oldest first.")
    lst.add_argument("--party", metavar="CC:PID", help="only agreements this party is a side of")
    lst.add_argument("--status", choices=("active", "suspended"), help="only agreements with this status")
    helps = {"show": "one agreement", "suspend": "stop what the agreement allows until it is resumed",
             "resume": "undo a suspend", "remove": "delete the agreement"}
    for action, text in helps.items():
        p = asub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("id", help="agreement id (see 'agreements list')")
    imp = asub.add_parser("import", help="add or replace agreements from a CSV file (all rows or none)",
                          description="Add or replace agreements from a CSV file in the export's columns: a row "
                                      "with a known id replaces that agreement. Every row is checked first; one "
                                      "bad row and nothing is imported (the bad rows are listed by number).")
    imp.add_argument("file", help="the CSV file ('-' reads standard input)")
    exp = asub.add_parser("export", help="every agreement as CSV", description="Write every agreement as CSV.")
    exp.add_argument("file", nargs="?", help="where to write it (default: standard output)")
    chk = asub.add_parser("check", help="what the hub decides for an exchange now, and why",
                          description="What the hub decides now when FROM sends TO a MODULE request, and why.")
    chk.add_argument("from_party", metavar="FROM", help="CC:PID or CC:PID:ROLE, e.g. NL:CPA")
    chk.add_argument("to_party", metavar="TO", help="CC:PID or CC:PID:ROLE, e.g. DE:EMB")
    chk.add_argument("module", metavar="MODULE", help="a functional module, e.g. cdrs")


def _agreements(settings: Settings, args: argparse.Namespace) -> Any:
    base = "/admin/agreements"
    if args.action == "add":
        body: dict[str, Any] = {"party_a": args.party_a, "party_b": args.party_b, "modules": args.module,
                                "reference": args.reference, "status": "suspended" if args.suspended else "active"}
        for name in ("valid_from", "valid_until", "id"):
            if getattr(args, name):
                body[name] = getattr(args, name)
        return call(settings, "POST", base, body)
    if args.action == "list":
        params = {k: v for k, v in (("party", args.party), ("status", args.status)) if v}
        return call(settings, "GET", base + ("?" + urllib.parse.urlencode(params) if params else ""))
    if args.action == "show":
        return call(settings, "GET", f"{base}/{_segment(args.id)}")
    if args.action == "remove":
        return call(settings, "DELETE", f"{base}/{_segment(args.id)}")
    if args.action in ("suspend", "resume"):
        return call(settings, "POST", f"{base}/{_segment(args.id)}/{args.action}")
    if args.action == "import":
        try:
            data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        raw = call_raw(settings, "POST", base + "/import", data, "text/csv")
        return json.loads(raw)
    if args.action == "check":
        query = urllib.parse.urlencode({"from": args.from_party, "to": args.to_party, "module": args.module})
        return call(settings, "GET", f"{base}/check?{query}")
    text = call_raw(settings, "GET", base + "/export").decode()
    if args.file:
        try:
            Path(args.file).write_text(text)
        except OSError as exc:
            raise CliError(f"cannot write {args.file}: {exc.strerror or exc}") from None
        return {"exported": max(len(text.splitlines()) - 1, 0), "file": args.file}
    sys.stdout.write(text)
    return _PRINTED


_PRINTED = object()  # the command wrote its own output (CSV), not JSON


def _dead_letters(settings: Settings, args: argparse.Namespace) -> Any:
    if args.action == "list":
        params = {"limit": args.limit, **({"receiver": args.receiver} if args.receiver else {})}
        query = "?" + urllib.parse.urlencode(params)
        return call(settings, "GET", "/admin/dead-letters" + query)
    if args.action == "replay":
        return call(settings, "POST", f"/admin/dead-letters/{_segment(args.id)}/replay")
    return call(settings, "DELETE", f"/admin/dead-letters/{_segment(args.id)}")


def _segment(value: str) -> str:
    """An id as one URL path segment: '/', '?' or '..' in it cannot reach another admin endpoint."""
    return urllib.parse.quote(value, safe="")


def run_admin(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "queues":
            result = call(settings, "GET", "/admin/queues")
        elif args.command == "deliveries":
            result = call(settings, "GET", f"/admin/deliveries/{_segment(args.request_id)}")
        elif args.command == "audit":
            params = {k: v for k, v in vars(args).items()
                      if k in ("correlation_id", "request_id", "platform", "party", "module", "outcome", "since",
                               "until", "limit") and v is not None}
            result = call(settings, "GET", "/admin/audit?" + urllib.parse.urlencode(params))
        elif args.command == "dead-letters":
            result = _dead_letters(settings, args)
        elif args.command == "agreements":
            result = _agreements(settings, args)
        elif args.action == "store-and-forward":
            result = call(settings, "PUT", f"/admin/platforms/{_segment(args.id)}/store-and-forward",
                          {"modules": args.modules})
        elif args.action == "roaming-policy":
            result = call(settings, "PUT", f"/admin/platforms/{_segment(args.id)}/roaming-policy",
                          {"policy": None if args.policy == "default" else args.policy})
        elif args.action == "connect":
            body = {"name": args.name, "versions_url": args.versions_url, "token_a": args.token_a}
            result = call(settings, "POST", "/admin/platforms/connect",
                          {**body, "role": args.role} if args.role else body)
        elif args.action == "add":
            result = call(settings, "POST", "/admin/platforms", {"name": args.name, "roles": args.role,
                                                                 "allowed_hosts": args.allowed_host})
        elif args.action == "allowed-hosts":
            result = call(settings, "PUT", f"/admin/platforms/{_segment(args.id)}/allowed-hosts",
                          {"allowed_hosts": args.hosts})
        elif args.action == "list":
            query = "?" + urllib.parse.urlencode({"status": args.status}) if args.status else ""
            result = call(settings, "GET", "/admin/platforms" + query)
        elif args.action == "show":
            result = call(settings, "GET", f"/admin/platforms/{_segment(args.id)}")
        elif args.action == "rate-limit":
            result = _rate_limit(settings, args)
        elif args.action == "remove":
            result = call(settings, "DELETE", f"/admin/platforms/{_segment(args.id)}")
        else:
            result = call(settings, "POST", f"/admin/platforms/{_segment(args.id)}/{args.action}")
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is not _PRINTED:
        print(json.dumps(result, indent=2))
    return 0
