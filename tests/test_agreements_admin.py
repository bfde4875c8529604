"""The admin API and CLI of roaming agreements (docs/agreements.md, "Admin API and CLI"): CRUD, suspend/resume,
the check, CSV export and import (round trip, a bad file), the audit of every change; and two hub processes on
one store and one Redis: an agreement added through one holds at once on the other.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from hub.audit import AuditQuery
from hub.context import HUB_KEY, Hub
from tests.conftest import (
    REDIS_URL,
    HubHarness,
    cleanup_prefix,
    hub_settings,
    real_redis_available,
    start_hub,
    stop_hub,
)
from tests.test_cli import Served, assert_clear_failure, cli, serve

A = {"party_a": "NL:CPA:CPO", "party_b": "DE:EMB:EMSP"}


def core(h: HubHarness) -> Hub:
    return h.app[HUB_KEY]


async def test_add_show_list_suspend_resume_remove(hub: HubHarness) -> None:
    status, made = await hub.admin("POST", "/admin/agreements", {
        **A, "modules": ["cdrs", "Sessions"], "valid_from": "2025-01-01T00:00:00+01:00", "reference": "C-17"})
    assert status == 201, made
    assert made["id"].startswith("A") and made["modules"] == ["cdrs", "sessions"]
    assert made["party_a"] == {"country_code": "NL", "party_id": "CPA", "role": "CPO"}
    assert (made["valid_from"], made["valid_until"], made["status"], made["in_force"]) == (
        "2024-12-31T23:00:00Z", None, "active", True)
    status, other = await hub.admin("POST", "/admin/agreements", {
        "id": "X-1", "party_a": {"country_code": "nl", "party_id": "cpb", "role": "cpo"}, "party_b": "DE:EMB:EMSP"})
    assert status == 201 and other["modules"] == ["*"], other
    assert (await hub.admin("GET", f"/admin/agreements/{made['id']}")) == (200, made)
    status, listed = await hub.admin("GET", "/admin/agreements?party=NL:CPB")
    assert status == 200 and [a["id"] for a in listed] == ["X-1"]
    assert [a["id"] for a in (await hub.admin("GET", "/admin/agreements"))[1]] == [made["id"], "X-1"]
    status, body = await hub.admin("POST", f"/admin/agreements/{made['id']}/suspend")
    assert (status, body["status"], body["in_force"]) == (200, "suspended", False)
    assert [a["id"] for a in (await hub.admin("GET", "/admin/agreements?status=suspended"))[1]] == [made["id"]]
    status, body = await hub.admin("POST", f"/admin/agreements/{made['id']}/resume")
    assert (status, body["status"]) == (200, "active")
    status, body = await hub.admin("DELETE", "/admin/agreements/X-1")
    assert (status, body["status"]) == (200, "removed")
    assert (await hub.admin("GET", "/admin/agreements/X-1"))[0] == 404
    assert await core(hub).store.get_agreement("X-1") is None
    assert await core(hub).store.get_agreement(made["id"]) is not None


@pytest.mark.parametrize(("body", "message"), [
    ({"party_a": "NL:CPA", "party_b": "DE:EMB:EMSP"}, "party_a: a party is CC:PID:ROLE"),
    ({**A, "modules": ["coffee"]}, "unknown module 'coffee'"),
    ({**A, "valid_from": "2025-02-01T00:00:00Z", "valid_until": "2025-01-01T00:00:00Z"}, "valid_until must be after"),
    ({**A, "valid_from": "yesterday"}, "valid_from is not an RFC 3339 DateTime"),
    ({**A, "status": "paused"}, "status must be one of active, suspended"),
    ({"party_a": "NL:CPA:CPO", "party_b": "nl:cpa:emsp"}, "two different parties"),
    ({"party_a": "NL:CPA:CPO"}, "party_b"),
])
async def test_invalid_input_is_400_naming_the_problem(hub: HubHarness, body: dict[str, Any], message: str) -> None:
    status, doc = await hub.admin("POST", "/admin/agreements", body)
    assert status == 400 and message in doc["error"], doc
    assert core(hub).agreements.all() == []


async def test_a_duplicate_id_is_409_and_unknown_ids_are_404(hub: HubHarness) -> None:
    assert (await hub.admin("POST", "/admin/agreements", {**A, "id": "A1"}))[0] == 201
    status, doc = await hub.admin("POST", "/admin/agreements", {**A, "id": "A1"})
    assert status == 409 and "exists already" in doc["error"]
    for method, path in (("GET", "/admin/agreements/nope"), ("DELETE", "/admin/agreements/nope"),
                         ("POST", "/admin/agreements/nope/suspend")):
        assert (await hub.admin(method, path))[0] == 404


async def test_check_answers_what_the_routing_path_decides(make_hub: Any) -> None:
    h = await make_hub(roaming_policy="agreements")
    await h.admin("POST", "/admin/agreements", {**A, "id": "A12", "modules": ["sessions"]})
    status, doc = await h.admin("GET", "/admin/agreements/check?from=NL:CPA&to=DE:EMB&module=sessions")
    assert (status, doc["allowed"], doc["reason"], doc["policy"]) == (200, True, "agreement A12", "agreements")
    status, doc = await h.admin("GET", "/admin/agreements/check?from=NL:CPA:CPO&to=DE:EMB:EMSP&module=cdrs")
    assert (doc["allowed"], doc["reason"]) == (
        False, "no agreement between NL/CPA (CPO) and DE/EMB (EMSP) covering cdrs (A12 covers sessions)")
    assert (await h.admin("GET", "/admin/agreements/check?from=NL&to=DE:EMB&module=cdrs"))[0] == 400
    assert (await h.admin("GET", "/admin/agreements/check?from=NL:CPA&to=DE:EMB"))[0] == 400
    opened = await make_hub()
    status, doc = await opened.admin("GET", "/admin/agreements/check?from=NL:CPA&to=DE:EMB&module=cdrs")
    assert (doc["allowed"], doc["policy"]) == (True, "open"), doc


async def test_every_change_is_audited_with_both_parties(hub: HubHarness) -> None:
    status, made = await hub.admin("POST", "/admin/agreements", A)
    assert status == 201
    await hub.admin("POST", f"/admin/agreements/{made['id']}/suspend")
    await hub.admin("DELETE", f"/admin/agreements/{made['id']}")
    await hub.admin("GET", "/admin/agreements")  # reading is not audited
    await core(hub).audit.flush()
    records = await core(hub).store.query_audit(AuditQuery(module="admin", party="DE:EMB"))
    assert [(r.method, r.path.rsplit("/", 1)[-1], r.from_party, r.to_party, r.http_status) for r in records] == [
        ("DELETE", made["id"], "NL:CPA", "DE:EMB", 200),
        ("POST", "suspend", "NL:CPA", "DE:EMB", 200),
        ("POST", "agreements", "NL:CPA", "DE:EMB", 201),
    ]
    assert all(r.actor and r.actor.startswith("admin@") for r in records)


async def test_csv_export_then_import_round_trips(hub: HubHarness) -> None:
    await hub.admin("POST", "/admin/agreements", {**A, "id": "A1", "modules": ["cdrs", "sessions"],
                                                  "valid_from": "2025-01-01T00:00:00Z",
                                                  "valid_until": "2026-01-01T00:00:00Z",
                                                  "reference": 'contract "7", Amsterdam; é'})
    await hub.admin("POST", "/admin/agreements", {"party_a": "NL:CPB:CPO", "party_b": "DE:EMC:EMSP", "id": "A2",
                                                  "status": "suspended", "valid_from": "2025-03-01T00:00:00Z"})
    before = (await hub.admin("GET", "/admin/agreements"))[1]
    async with hub.session.get(hub.url + "/admin/agreements/export",
                               headers={"Authorization": f"Bearer {hub.settings.admin_token}"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        text = await resp.text()
    assert text.splitlines()[0] == "id,party_a,party_b,modules,valid_from,valid_until,status,reference"
    assert text.splitlines()[1] == ('A1,NL:CPA:CPO,DE:EMB:EMSP,cdrs;sessions,2025-01-01T00:00:00Z,'
                                    '2026-01-01T00:00:00Z,active,"contract ""7"", Amsterdam; é"')
    for a in before:
        await hub.admin("DELETE", f"/admin/agreements/{a['id']}")
    status, doc = await _import(hub, text)
    assert (status, doc["imported"], doc["created"], doc["updated"]) == (200, 2, 2, 0), doc
    after = (await hub.admin("GET", "/admin/agreements"))[1]
    drop = ("created_at", "updated_at")
    assert [{k: v for k, v in a.items() if k not in drop} for a in after] == [
        {k: v for k, v in a.items() if k not in drop} for a in before]
    status, doc = await _import(hub, text.replace("active", "suspended"))  # known ids are replaced
    assert (status, doc["created"], doc["updated"]) == (200, 0, 2)
    assert {a.status.value for a in core(hub).agreements.all()} == {"suspended"}


async def _import(hub: HubHarness, text: str) -> tuple[int, Any]:
    async with hub.session.post(hub.url + "/admin/agreements/import", data=text.encode(),
                                headers={"Authorization": f"Bearer {hub.settings.admin_token}",
                                         "Content-Type": "text/csv"}) as resp:
        return resp.status, await resp.json()


async def test_a_bad_csv_imports_nothing_and_names_every_bad_row(hub: HubHarness) -> None:
    await hub.admin("POST", "/admin/agreements", {**A, "id": "KEEP"})
    text = ("id,party_a,party_b,modules,valid_from,valid_until,status,reference\n"
            "N1,NL:CPA:CPO,DE:EMA:EMSP,cdrs,2025-01-01T00:00:00Z,,active,fine\n"
            "N2,NL:CPA,DE:EMA:EMSP,cdrs,,,active,no role\n"
            "\n"
            "N3,NL:CPA:CPO,DE:EMA:EMSP,coffee,,,active,\n"
            "N1,NL:CPB:CPO,DE:EMA:EMSP,,,,active,same id\n"
            "N5,NL:CPA:CPO,DE:EMA:EMSP,,2025-02-01T00:00:00Z,2025-01-01T00:00:00Z,active,\n"
            "N6,NL:CPA:CPO,DE:EMA:EMSP,,,,gone,\n"
            "N7,NL:CPA:CPO,DE:EMA:EMSP,,,,active,x,extra\n")
    status, doc = await _import(hub, text)
    assert status == 400 and doc["error"] == "nothing imported: 6 bad row(s)", doc
    assert [e.split(":")[0] for e in doc["errors"]] == ["row 3", "row 5", "row 6", "row 7", "row 8", "row 9"]
    assert "party_a: a party is CC:PID:ROLE" in doc["errors"][0]
    assert "unknown module 'coffee'" in doc["errors"][1]
    assert "id N1 is also on row 2" in doc["errors"][2]
    assert "valid_until must be after valid_from" in doc["errors"][3]
    assert "status must be one of" in doc["errors"][4]
    assert "9 cells, the header has 8" in doc["errors"][5]
    assert [a.id for a in core(hub).agreements.all()] == ["KEEP"]
    assert [a.id for a in await core(hub).store.list_agreements()] == ["KEEP"]
    status, doc = await _import(hub, "id,party,other\nX,NL:CPA:CPO,DE:EMA:EMSP\n")
    assert status == 400 and doc["errors"][0].startswith("row 1 (header): missing column(s) party_a, party_b")
    assert (await _import(hub, "id,party_a,party_b\n"))[1]["error"] == "nothing imported: the CSV has no rows"


# -- CLI --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    hub = serve(tmp_path_factory.mktemp("agreements"), HUB_ROAMING_POLICY="agreements")
    try:
        yield hub
    finally:
        hub.stop()


def test_cli_add_list_check_suspend_export_import_remove(served: Served, tmp_path: Path) -> None:
    made = cli("agreements", "add", "--party-a", "NL:CPA:CPO", "--party-b", "DE:EMB:EMSP", "--module", "cdrs",
               "--module", "sessions", "--valid-from", "2025-01-01T00:00:00Z", "--reference", "C-9", "--id", "C1",
               url=served.url).json()
    assert (made["id"], made["modules"], made["reference"]) == ("C1", ["cdrs", "sessions"], "C-9")
    assert [a["id"] for a in cli("agreements", "list", "--party", "DE:EMB", url=served.url).json()] == ["C1"]
    verdict = cli("agreements", "check", "NL:CPA", "DE:EMB", "cdrs", url=served.url).json()
    assert (verdict["allowed"], verdict["reason"]) == (True, "agreement C1")
    assert cli("agreements", "suspend", "C1", url=served.url).json()["status"] == "suspended"
    verdict = cli("agreements", "check", "NL:CPA", "DE:EMB", "cdrs", url=served.url).json()
    assert (verdict["allowed"], verdict["reason"]) == (False, "agreement C1 is suspended")
    assert cli("agreements", "resume", "C1", url=served.url).json()["status"] == "active"
    assert cli("agreements", "show", "C1", url=served.url).json()["status"] == "active"
    exported = cli("agreements", "export", url=served.url)
    assert exported.code == 0 and exported.stdout.startswith("id,party_a,party_b,"), exported
    target = tmp_path / "agreements.csv"
    assert cli("agreements", "export", str(target), url=served.url).json() == {"exported": 1, "file": str(target)}
    assert target.read_text() == exported.stdout
    assert cli("agreements", "remove", "C1", url=served.url).json()["status"] == "removed"
    assert cli("agreements", "list", url=served.url).json() == []
    assert cli("agreements", "import", str(target), url=served.url).json()["imported"] == 1
    assert cli("agreements", "show", "C1", url=served.url).json()["reference"] == "C-9"


def test_cli_import_of_a_bad_csv_fails_listing_the_rows(served: Served, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,party_a,party_b,modules\nB1,NL:CPA:CPO,DE:EMB:EMSP,cdrs\nB2,NL:CPA,DE:EMB:EMSP,\n")
    result = cli("agreements", "import", str(bad), url=served.url)
    assert_clear_failure(result, "nothing imported: 1 bad row(s)", "row 3: party_a")
    assert "B1" not in cli("agreements", "export", url=served.url).stdout
    assert_clear_failure(cli("agreements", "import", str(tmp_path / "missing.csv"), url=served.url), "cannot read")
    assert_clear_failure(cli("agreements", "show", "nope", url=served.url), "HTTP 404", "no agreement nope")


def test_cli_platforms_roaming_policy(served: Served) -> None:
    made = cli("platforms", "add", "--name", "P", "--role", "NL:CPZ:CPO", url=served.url).json()
    body = cli("platforms", "roaming-policy", made["id"], "open", url=served.url).json()
    assert body["roaming_policy"] == {"policy": "open", "source": "platform"}
    body = cli("platforms", "roaming-policy", made["id"], "default", url=served.url).json()
    assert body["roaming_policy"] == {"policy": "agreements", "source": "default"}


@pytest.mark.parametrize("args", [
    ("agreements",), ("agreements", "add"), ("agreements", "list"), ("agreements", "show"), ("agreements", "suspend"),
    ("agreements", "resume"), ("agreements", "remove"), ("agreements", "import"), ("agreements", "export"),
    ("agreements", "check"), ("platforms", "roaming-policy"),
])
def test_cli_every_agreements_subcommand_has_help(args: tuple[str, ...]) -> None:
    result = cli(*args, "--help", url="http://127.0.0.1:9")
    assert result.code == 0 and "usage: ocpi-hub" in result.stdout, result
    assert len(result.stdout.split("options:")[0].strip().splitlines()) >= 2  # a description or arguments


# -- several workers --------------------------------------------------------------------------------------------

async def test_an_agreement_added_through_one_worker_holds_at_once_on_the_other(tmp_path: Path) -> None:
    """Two hub apps on one SQLite file and one real Redis prefix, as ``serve --workers 2`` runs them."""
    if not real_redis_available():
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = "test-agreements-" + uuid.uuid4().hex[:8]
    common = {"redis_url": REDIS_URL, "key_prefix": prefix, "sqlite_path": str(tmp_path / "hub.sqlite3"),
              "roaming_policy": "agreements"}
    one = await start_hub(hub_settings(**common))
    two = await start_hub(hub_settings(**common))
    try:
        check = "/admin/agreements/check?from=NL:CPA&to=DE:EMB&module=cdrs"
        assert (await two.admin("GET", check))[1]["allowed"] is False
        status, made = await one.admin("POST", "/admin/agreements", A)
        assert status == 201
        # no waiting: the add returned only once the other worker applied it
        assert core(two).agreements.get(made["id"]) is not None
        assert (await two.admin("GET", check))[1] == {
            "allowed": True, "reason": f"agreement {made['id']}", "policy": "agreements", "from": "NL/CPA",
            "to": "DE/EMB", "module": "cdrs"}
        assert (await two.admin("POST", f"/admin/agreements/{made['id']}/suspend"))[0] == 200
        assert (await one.admin("GET", check))[1]["reason"] == f"agreement {made['id']} is suspended"
        text = "party_a,party_b,modules\nNL:CPB:CPO,DE:EMB:EMSP,cdrs\n"
        status, doc = await _import(one, text)
        assert status == 200, doc
        assert core(two).agreements.get(doc["ids"][0]) is not None
        assert (await one.admin("DELETE", f"/admin/agreements/{made['id']}"))[0] == 200
        assert core(two).agreements.get(made["id"]) is None
        # a change the notice missed is repaired by the periodic full reload (here: called at once)
        await core(one).store.delete_agreement(doc["ids"][0])
        await asyncio.wait_for(core(two).agreement_keeper.load(), 5)
        assert core(two).agreements.all() == []
    finally:
        for h in (one, two):
            await stop_hub(h)
        cleanup_prefix(prefix)
