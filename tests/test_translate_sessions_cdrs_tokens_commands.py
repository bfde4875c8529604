"""Sessions, CDRs, Tokens and Commands across OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md): the official
examples round-trip with every change named by a loss, plus small examples of our own for a bare clone."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from routing.ocpi.translate import Context, Untranslatable, translatable, translate
from routing.ocpi.translate.base import (
    AUTHORIZATION_INFO,
    CANCEL_RESERVATION,
    CDR,
    CHARGING_PREFERENCES,
    COMMAND_RESPONSE,
    COMMAND_RESULT,
    DEFAULTED,
    DERIVED,
    DROPPED,
    LOCATION_REFERENCES,
    MAPPED,
    RESERVE_NOW,
    SESSION,
    START_SESSION,
    STOP_SESSION,
    TOKEN,
    UNLOCK_CONNECTOR,
    Loss,
)
from routing.ocpi.translate.commands import COMMAND_TIMEOUT_211
from tests.conftest import ocpi_examples
from tests.translation_check import assert_round_trip

VERSIONS = ("2.1.1", "2.2.1", "2.3.0")
KINDS = {"session_": SESSION, "cdr_": CDR, "token_": TOKEN}
CPO, EMSP = ("BE", "BEC"), ("DE", "TNM")


def rules(losses: list[Loss], path: str) -> set[str]:
    return {loss.rule for loss in losses if loss.path == path}


# --- official examples -----------------------------------------------------------------------------------------

def _context(obj: dict[str, Any], version: str, kind: str, partial: bool) -> Context:
    """What the router knows: the owner (URL path / connection) and the eMSP the message is for."""
    if partial:
        return Context(partial=True)
    if version == "2.1.1":  # 2.1.1 objects name neither: the examples' CPO is BE/BEC, the eMSP DE/TNM
        return Context(owner=CPO if kind != TOKEN else EMSP, counterpart=EMSP if kind != TOKEN else None)
    token = obj.get("cdr_token")
    return Context(owner=(obj["country_code"], obj["party_id"]),
                   counterpart=(token["country_code"], token["party_id"]) if token else None)


@pytest.mark.parametrize("version,via", [(v, w) for v in VERSIONS for w in VERSIONS if v != w])
def test_official_examples_round_trip(version: str, via: str) -> None:
    seen: dict[str, int] = {}
    for path in ocpi_examples(version):
        kind = next((k for prefix, k in KINDS.items() if path.name.startswith(prefix)), None)
        if kind is None:
            continue
        obj = json.loads(path.read_text())
        partial = "_patch_" in path.name
        assert_round_trip(kind, obj, source=version, via=via, ctx=_context(obj, version, kind, partial))
        seen[kind] = seen.get(kind, 0) + 1
    assert set(seen) == {SESSION, CDR, TOKEN}, seen  # every kind has examples in every version


def test_official_221_cdr_down_names_its_losses() -> None:
    path = next(p for p in ocpi_examples("2.2.1") if p.name == "cdr_example.json")
    cdr = json.loads(path.read_text())
    out = translate(CDR, cdr, source="2.2.1", target="2.1.1")
    assert out.data["total_cost"] == 4.00 and out.data["auth_id"] == "DE8ACC12E46L89"
    assert out.data["location"]["evses"][0]["connectors"][0]["tariff_id"] == "12"
    assert DROPPED in rules(out.losses, "total_time_cost")
    assert DROPPED in rules(out.losses, "tariffs[0].elements[0].price_components[0].vat")


# --- small examples of our own ------------------------------------------------------------------------------------

SESSION_211 = {
    "id": "S1", "start_datetime": "2024-01-01T10:00:00Z", "kwh": 3.5, "auth_id": "NL-XYZ-C12345678-9",
    "auth_method": "AUTH_REQUEST",
    "location": {"id": "L1", "type": "PARKING_LOT", "address": "Street 1", "city": "Town", "postal_code": "1000",
                 "country": "NLD", "coordinates": {"latitude": "52.000000", "longitude": "4.000000"},
                 "evses": [{"uid": "E1", "status": "CHARGING", "connectors": [
                     {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
                      "voltage": 230, "amperage": 16, "tariff_id": "T1", "last_updated": "2024-01-01T09:00:00Z"}],
                     "last_updated": "2024-01-01T09:00:00Z"}],
                 "last_updated": "2024-01-01T09:00:00Z"},
    "currency": "EUR",
    "charging_periods": [{"start_date_time": "2024-01-01T10:00:00Z",
                          "dimensions": [{"type": "ENERGY", "volume": 3.5}, {"type": "FLAT", "volume": 1}]}],
    "total_cost": 1.25, "status": "ACTIVE", "last_updated": "2024-01-01T10:30:00Z",
}

CDR_221 = {
    "country_code": "NL", "party_id": "CPO", "id": "C1", "start_date_time": "2024-01-01T10:00:00Z",
    "end_date_time": "2024-01-01T11:00:00Z", "session_id": "S1",
    "cdr_token": {"country_code": "DE", "party_id": "TNM", "uid": "AB12", "type": "RFID", "contract_id": "DE-TNM-1"},
    "auth_method": "COMMAND", "authorization_reference": "REF1",
    "cdr_location": {"id": "L1", "address": "Street 1", "city": "Town", "country": "NLD",
                     "coordinates": {"latitude": "52.1234567", "longitude": "4.12345"}, "evse_uid": "E1",
                     "evse_id": "NL*CPO*E1", "connector_id": "1", "connector_standard": "IEC_62196_T2",
                     "connector_format": "CABLE", "connector_power_type": "AC_2_PHASE"},
    "currency": "EUR",
    "charging_periods": [{"start_date_time": "2024-01-01T10:00:00Z",
                          "dimensions": [{"type": "ENERGY", "volume": 10}, {"type": "MAX_POWER", "volume": 11}]}],
    "total_cost": {"excl_vat": 5.0, "incl_vat": 6.05}, "total_energy": 10, "total_time": 1,
    "total_energy_cost": {"excl_vat": 5.0}, "last_updated": "2024-01-01T11:05:00Z",
}

TOKEN_230_EMAID = {
    "country_code": "DE", "party_id": "TNM", "uid": "DE-TNM-C12345678-X", "type": "EMAID",
    "contract_id": "DE-TNM-C12345678-X", "issuer": "TNM", "valid": True, "whitelist": "ALLOWED",
    "last_updated": "2024-01-01T00:00:00Z", "vendor_extension": {"a": 1},
}


def test_211_session_auth_id_becomes_cdr_token_of_the_counterpart() -> None:
    out = translate(SESSION, SESSION_211, source="2.1.1", target="2.2.1", ctx=Context(owner=CPO, counterpart=EMSP))
    assert out.data["cdr_token"] == {"country_code": "DE", "party_id": "TNM", "uid": "NL-XYZ-C12345678-9",
                                     "type": "OTHER", "contract_id": "NL-XYZ-C12345678-9"}
    assert rules(out.losses, "auth_id") == {DERIVED, DEFAULTED}
    assert (out.data["country_code"], out.data["party_id"]) == CPO and DERIVED in rules(out.losses, "party_id")
    assert (out.data["location_id"], out.data["evse_uid"], out.data["connector_id"]) == ("L1", "E1", "1")
    assert DROPPED in rules(out.losses, "location.evses[0].status")
    period = out.data["charging_periods"][0]
    assert period["dimensions"] == [{"type": "ENERGY", "volume": 3.5}] and period["tariff_id"] == "T1"
    assert DROPPED in rules(out.losses, "charging_periods[0].dimensions[1]")
    assert out.data["total_cost"] == {"excl_vat": 1.25}


def test_211_session_without_counterpart_uses_the_emaid_or_is_refused() -> None:
    out = translate(SESSION, SESSION_211, source="2.1.1", target="2.2.1", ctx=Context(owner=CPO))
    assert (out.data["cdr_token"]["country_code"], out.data["cdr_token"]["party_id"]) == ("NL", "XYZ")
    rfid_only = {**SESSION_211, "auth_id": "04A2B3C4"}
    with pytest.raises(Untranslatable) as refused:
        translate(SESSION, rfid_only, source="2.1.1", target="2.2.1", ctx=Context(owner=CPO))
    assert refused.value.path == "auth_id"
    with pytest.raises(Untranslatable) as no_owner:
        translate(SESSION, SESSION_211, source="2.1.1", target="2.2.1", ctx=Context(counterpart=EMSP))
    assert no_owner.value.path == "country_code"


def test_own_session_round_trips_both_ways() -> None:
    ctx = Context(owner=CPO, counterpart=EMSP)
    for via in ("2.2.1", "2.3.0"):
        assert_round_trip(SESSION, SESSION_211, source="2.1.1", via=via, ctx=ctx)
    up = translate(SESSION, SESSION_211, source="2.1.1", target="2.3.0", ctx=ctx).data
    assert_round_trip(SESSION, up, source="2.3.0", via="2.1.1", ctx=ctx)


def test_221_session_down_reservation_and_unassigned_evse() -> None:
    session = {"country_code": "NL", "party_id": "CPO", "id": "S2", "start_date_time": "2024-01-01T10:00:00Z",
               "kwh": 0, "cdr_token": CDR_221["cdr_token"], "auth_method": "COMMAND", "location_id": "L1",
               "evse_uid": "#NA", "connector_id": "#NA", "currency": "EUR", "status": "RESERVATION",
               "last_updated": "2024-01-01T10:00:00Z"}
    out = translate(SESSION, session, source="2.2.1", target="2.1.1")
    assert out.data["status"] == "PENDING" and MAPPED in rules(out.losses, "status")
    assert out.data["auth_method"] == "AUTH_REQUEST" and out.data["auth_id"] == "DE-TNM-1"
    assert out.data["location"]["id"] == "L1" and out.data["location"]["evses"] == []
    with pytest.raises(Untranslatable) as refused:  # a 2.1.1 PATCH moves a session with its whole location
        translate(SESSION, {"evse_uid": "E2"}, source="2.2.1", target="2.1.1", ctx=Context(partial=True))
    assert refused.value.path == "evse_uid"


def test_221_cdr_total_cost_becomes_a_number_and_incl_vat_is_reported() -> None:
    out = translate(CDR, CDR_221, source="2.2.1", target="2.1.1")
    assert out.data["total_cost"] == 5.0
    assert rules(out.losses, "total_cost.incl_vat") == {DROPPED}
    assert "total_energy_cost" not in out.data and DROPPED in rules(out.losses, "total_energy_cost")
    location = out.data["location"]
    assert location["coordinates"] == {"latitude": "52.123457", "longitude": "4.123450"}
    assert MAPPED in rules(out.losses, "cdr_location.coordinates.latitude")
    connector = location["evses"][0]["connectors"][0]
    assert connector["power_type"] == "AC_1_PHASE" and connector["voltage"] == 0 and location["postal_code"] == ""
    assert out.data["charging_periods"][0]["dimensions"] == [{"type": "ENERGY", "volume": 10}]
    assert DROPPED in rules(out.losses, "session_id") and DROPPED in rules(out.losses, "authorization_reference")


def test_cdr_credit_is_refused_towards_211() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate(CDR, {**CDR_221, "credit": True, "credit_reference_id": "C0"}, source="2.2.1", target="2.1.1")
    assert refused.value.path == "credit"


def test_230_cdr_tariff_with_taxes_included_is_converted_to_excl_vat() -> None:
    tariff = {"country_code": "NL", "party_id": "CPO", "id": "T1", "currency": "EUR", "tax_included": "YES",
              "elements": [{"price_components": [{"type": "ENERGY", "price": 0.363, "vat": 21.0, "step_size": 1}]}],
              "last_updated": "2024-01-01T00:00:00Z"}
    cdr = translate(CDR, CDR_221, source="2.2.1", target="2.3.0").data
    out = translate(CDR, {**cdr, "tariffs": [tariff]}, source="2.3.0", target="2.2.1")
    assert out.data["tariffs"][0]["elements"][0]["price_components"][0]["price"] == pytest.approx(0.3)
    assert "tax_included" not in out.data["tariffs"][0]
    assert DERIVED in rules(out.losses, "tariffs[0].elements[0].price_components[0].price")
    no_rate = {**tariff, "elements": [{"price_components": [{"type": "ENERGY", "price": 0.3, "step_size": 1}]}]}
    dropped = translate(CDR, {**cdr, "tariffs": [no_rate]}, source="2.3.0", target="2.2.1")
    assert dropped.data["tariffs"] == [] and DROPPED in rules(dropped.losses, "tariffs[0]")


def test_230_cdr_connector_standard_unknown_to_221() -> None:
    cdr = translate(CDR, CDR_221, source="2.2.1", target="2.3.0").data
    nacs = copy.deepcopy(cdr)
    nacs["cdr_location"]["connector_standard"] = "SAE_J3400"
    out = translate(CDR, nacs, source="2.3.0", target="2.2.1")
    assert out.data["cdr_location"]["connector_standard"] == "TESLA_S"
    nacs["cdr_location"]["connector_standard"] = "MCS"
    with pytest.raises(Untranslatable) as refused:
        translate(CDR, nacs, source="2.3.0", target="2.2.1")
    assert refused.value.path == "cdr_location.connector_standard"


def test_230_emaid_token_goes_down_as_other() -> None:
    to_221 = translate(TOKEN, TOKEN_230_EMAID, source="2.3.0", target="2.2.1")
    assert to_221.data["type"] == "OTHER" and rules(to_221.losses, "type") == {MAPPED}
    assert "vendor_extension" not in to_221.data and rules(to_221.losses, "vendor_extension") == {DROPPED}
    to_211 = translate(TOKEN, TOKEN_230_EMAID, source="2.3.0", target="2.1.1")
    assert to_211.data["type"] == "OTHER" and to_211.data["auth_id"] == "DE-TNM-C12345678-X"
    assert "country_code" not in to_211.data
    assert any(loss.path == "type" and loss.rule == MAPPED and loss.step == "2.3.0>2.2.1" for loss in to_211.losses)


def test_unknown_fields_kept_going_up_to_230() -> None:
    token_221 = {k: v for k, v in TOKEN_230_EMAID.items() if k != "type"} | {"type": "RFID"}
    out = translate(TOKEN, token_221, source="2.2.1", target="2.3.0")
    assert out.data["vendor_extension"] == {"a": 1} and out.losses == []


def test_221_token_down_drops_what_211_lacks() -> None:
    token = {**{k: v for k, v in TOKEN_230_EMAID.items() if k != "vendor_extension"}, "type": "APP_USER",
             "group_id": "G1", "energy_contract": {"supplier_name": "Green"}}
    out = translate(TOKEN, token, source="2.2.1", target="2.1.1")
    assert out.data["type"] == "OTHER" and "group_id" not in out.data and "energy_contract" not in out.data
    assert rules(out.losses, "group_id") == {DROPPED} and rules(out.losses, "type") == {MAPPED}


def test_authorization_info_needs_the_handed_over_token_going_up() -> None:
    answer = {"allowed": "ALLOWED", "location": {"location_id": "L1", "evse_uids": ["E1"], "connector_ids": ["1"]}}
    with pytest.raises(Untranslatable) as refused:
        translate(AUTHORIZATION_INFO, answer, source="2.1.1", target="2.2.1", ctx=Context(owner=EMSP))
    assert refused.value.path == "token"
    handed = {**answer, "token": {"uid": "04A2B3C4", "type": "RFID"}}
    out = translate(AUTHORIZATION_INFO, handed, source="2.1.1", target="2.2.1", ctx=Context(owner=EMSP))
    token = out.data["token"]
    assert (token["country_code"], token["party_id"], token["uid"]) == ("DE", "TNM", "04A2B3C4")
    assert token["valid"] is True and token["whitelist"] == "NEVER" and token["contract_id"] == "#NA"
    assert out.data["location"] == {"location_id": "L1", "evse_uids": ["E1"]}
    assert rules(out.losses, "location.connector_ids") == {DROPPED}
    down = translate(AUTHORIZATION_INFO, {**out.data, "authorization_reference": "R1"}, source="2.2.1",
                     target="2.1.1")
    assert set(down.data) == {"allowed", "location"} and rules(down.losses, "token") == {DROPPED}


def test_cancel_reservation_to_211_is_refused_naming_the_field() -> None:
    body = {"response_url": "https://emsp.example.com/cb/1", "reservation_id": "42"}
    with pytest.raises(Untranslatable) as refused:
        translate(CANCEL_RESERVATION, body, source="2.2.1", target="2.1.1")
    assert refused.value.path == "reservation_id" and "reservation_id" in str(refused.value)
    with pytest.raises(Untranslatable):
        translate(CANCEL_RESERVATION, body, source="2.3.0", target="2.1.1")


def test_211_async_command_response_becomes_a_221_command_result() -> None:
    timeout = translate(COMMAND_RESULT, {"result": "TIMEOUT"}, source="2.1.1", target="2.2.1")
    assert timeout.data == {"result": "TIMEOUT"} and timeout.losses == []
    unknown = translate(COMMAND_RESULT, "UNKNOWN_SESSION", source="2.1.1", target="2.2.1")  # tag 2.1.1: bare enum
    assert unknown.data == {"result": "REJECTED", "message": [{"language": "en", "text": "UNKNOWN_SESSION"}]}
    assert rules(unknown.losses, "result") == {MAPPED}
    down = translate(COMMAND_RESULT, {"result": "EVSE_OCCUPIED", "message": []}, source="2.3.0", target="2.1.1")
    assert down.data == {"result": "REJECTED"} and rules(down.losses, "result") == {MAPPED}


def test_command_response_timeout_is_defaulted_going_up() -> None:
    out = translate(COMMAND_RESPONSE, {"result": "ACCEPTED"}, source="2.1.1", target="2.2.1")
    assert out.data == {"result": "ACCEPTED", "timeout": COMMAND_TIMEOUT_211}
    assert rules(out.losses, "timeout") == {DEFAULTED}
    late = translate(COMMAND_RESPONSE, "TIMEOUT", source="2.1.1", target="2.3.0")
    assert late.data["result"] == "REJECTED" and MAPPED in rules(late.losses, "result")
    down = translate(COMMAND_RESPONSE, {"result": "REJECTED", "timeout": 30}, source="2.2.1", target="2.1.1")
    assert down.data == {"result": "REJECTED"} and rules(down.losses, "timeout") == {DROPPED}


def test_reserve_now_reservation_id_int_and_string() -> None:
    token_211 = {"uid": "04A2B3C4", "type": "RFID", "auth_id": "DE-TNM-1", "issuer": "TNM", "valid": True,
                 "whitelist": "ALLOWED", "last_updated": "2024-01-01T00:00:00Z"}
    body = {"response_url": "https://emsp.example.com/cb/2", "token": token_211,
            "expiry_date": "2024-01-01T12:00:00Z", "reservation_id": 7, "location_id": "L1"}
    ctx = Context(owner=EMSP)
    up = translate(RESERVE_NOW, body, source="2.1.1", target="2.2.1", ctx=ctx)
    assert up.data["reservation_id"] == "7" and up.data["token"]["contract_id"] == "DE-TNM-1"
    assert up.data["token"]["country_code"] == "DE" and DERIVED in rules(up.losses, "token.country_code")
    assert_round_trip(RESERVE_NOW, body, source="2.1.1", via="2.3.0", ctx=ctx)
    for not_an_int in ("R7", "007"):
        with pytest.raises(Untranslatable) as refused:
            translate(RESERVE_NOW, {**up.data, "reservation_id": not_an_int}, source="2.2.1", target="2.1.1")
        assert refused.value.path == "reservation_id"


def test_start_session_down_drops_connector_and_reference() -> None:
    token = {k: v for k, v in TOKEN_230_EMAID.items() if k != "vendor_extension"}
    body = {"response_url": "https://emsp.example.com/cb/3", "token": token, "location_id": "L1",
            "evse_uid": "E1", "connector_id": "1", "authorization_reference": "R9"}
    out = translate(START_SESSION, body, source="2.3.0", target="2.1.1")
    assert set(out.data) == {"response_url", "token", "location_id", "evse_uid"}
    assert out.data["token"]["type"] == "OTHER" and MAPPED in rules(out.losses, "token.type")
    assert rules(out.losses, "connector_id") == {DROPPED}
    with pytest.raises(Untranslatable) as refused:  # the token of a 2.1.1 command needs its eMSP
        translate(START_SESSION, out.data, source="2.1.1", target="2.2.1")
    assert refused.value.path == "token.country_code"


SAMPLES: dict[str, tuple[str, Any]] = {
    SESSION: ("2.1.1", SESSION_211), CDR: ("2.2.1", CDR_221), TOKEN: ("2.3.0", TOKEN_230_EMAID),
    AUTHORIZATION_INFO: ("2.1.1", {"allowed": "ALLOWED", "token": {"uid": "X1", "type": "RFID"},
                                   "location": {"location_id": "L1", "connector_ids": ["1"]}}),
    LOCATION_REFERENCES: ("2.1.1", {"location_id": "L1", "evse_uids": ["E1"], "connector_ids": ["1"]}),
    STOP_SESSION: ("2.2.1", {"response_url": "https://e.example.com/cb", "session_id": "S1", "x": 1}),
    UNLOCK_CONNECTOR: ("2.3.0", {"response_url": "https://e.example.com/cb", "location_id": "L1",
                                 "evse_uid": "E1", "connector_id": "1"}),
    COMMAND_RESPONSE: ("2.2.1", {"result": "ACCEPTED", "timeout": 30, "message": [{"language": "en", "text": "ok"}]}),
    COMMAND_RESULT: ("2.3.0", {"result": "FAILED", "message": [{"language": "en", "text": "no"}]}),
    CHARGING_PREFERENCES: ("2.3.0", {"profile_type": "FAST", "energy_need": 20, "x-vendor": True}),
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_translate_never_mutates_its_input(kind: str) -> None:
    source, obj = SAMPLES[kind]
    before = copy.deepcopy(obj)
    ctx = Context(owner=CPO, counterpart=EMSP)
    targets = [v for v in VERSIONS if v != source and translatable(kind, source, v)]
    assert targets, kind
    for target in targets:
        out = translate(kind, obj, source=source, target=target, ctx=ctx)
        assert obj == before
        back = translate(kind, out.data, source=target, target=source, ctx=ctx)
        assert obj == before and back.data is not obj


def test_every_kind_has_every_step() -> None:
    for kind in (SESSION, CDR, TOKEN, AUTHORIZATION_INFO, LOCATION_REFERENCES, START_SESSION, STOP_SESSION,
                 RESERVE_NOW, CANCEL_RESERVATION, UNLOCK_CONNECTOR, COMMAND_RESPONSE, COMMAND_RESULT):
        assert all(translatable(kind, a, b) for a in VERSIONS for b in VERSIONS), kind
    assert translatable(CHARGING_PREFERENCES, "2.2.1", "2.3.0") and translatable(CHARGING_PREFERENCES, "2.3.0", "2.2.1")
    assert not translatable(CHARGING_PREFERENCES, "2.2.1", "2.1.1")
