"""What a routed body is, and where a 2.1.1 request goes: the pure decisions of routing/bridge.py."""

from __future__ import annotations

import pytest

from routing.bridge import (
    addressed_to_hub_211,
    hub_interface_211,
    owner_from_path,
    reply_kind,
    request_kind,
    translate_body,
)
from routing.ocpi.errors import InvalidParameters
from routing.ocpi.translate import Context


@pytest.mark.parametrize(("module", "role", "method", "segs", "kind"), [
    ("locations", "RECEIVER", "PUT", ["NL", "CPA", "L1"], "Location"),
    ("locations", "RECEIVER", "PATCH", ["NL", "CPA", "L1", "E1"], "EVSE"),
    ("locations", "RECEIVER", "PUT", ["NL", "CPA", "L1", "E1", "C1"], "Connector"),
    ("sessions", "RECEIVER", "PUT", ["NL", "CPA", "S1"], "Session"),
    ("sessions", "SENDER", "PUT", ["S1", "charging_preferences"], "ChargingPreferences"),
    ("cdrs", "RECEIVER", "POST", [], "CDR"),
    ("tariffs", "RECEIVER", "PUT", ["NL", "CPA", "T1"], "Tariff"),
    ("tokens", "RECEIVER", "PATCH", ["DE", "EMA", "U1"], "Token"),
    ("tokens", "SENDER", "POST", ["U1", "authorize"], "LocationReferences"),
    ("commands", "RECEIVER", "POST", ["START_SESSION"], "StartSession"),
    ("commands", "RECEIVER", "POST", ["cancel_reservation"], "CancelReservation"),
    ("commands", "SENDER", "POST", [], "CommandResult"),
    ("locations", "SENDER", "GET", [], None),
    ("tariffs", "RECEIVER", "DELETE", ["NL", "CPA", "T1"], None),
])
def test_the_kind_of_a_request_body_follows_module_role_method_and_depth(
        module: str, role: str, method: str, segs: list[str], kind: str | None) -> None:
    assert request_kind(module, role, method, segs) == kind


@pytest.mark.parametrize(("module", "role", "method", "segs", "kind"), [
    ("locations", "SENDER", "GET", [], "Location"),  # a page of Locations
    ("locations", "SENDER", "GET", ["L1", "E1"], "EVSE"),
    ("locations", "RECEIVER", "GET", ["NL", "CPA", "L1", "E1", "C1"], "Connector"),
    ("tokens", "SENDER", "POST", ["U1", "authorize"], "AuthorizationInfo"),
    ("commands", "RECEIVER", "POST", ["STOP_SESSION"], "CommandResponse"),
    ("cdrs", "SENDER", "GET", [], "CDR"),
    ("locations", "RECEIVER", "PUT", ["NL", "CPA", "L1"], None),  # a PUT is answered without data
])
def test_the_kind_of_an_answer_follows_the_request(
        module: str, role: str, method: str, segs: list[str], kind: str | None) -> None:
    assert reply_kind(module, role, method, segs) == kind


def test_the_owner_of_a_client_owned_object_is_in_its_path() -> None:
    assert owner_from_path("locations", "RECEIVER", ["nl", "cpa", "L1"]) == ("NL", "CPA")
    assert owner_from_path("locations", "SENDER", ["L1"]) is None
    assert owner_from_path("cdrs", "RECEIVER", []) is None


@pytest.mark.parametrize(("party_role", "module", "role"), [
    ("CPO", "locations", "RECEIVER"), ("CPO", "cdrs", "RECEIVER"), ("CPO", "tokens", "SENDER"),
    ("EMSP", "locations", "SENDER"), ("EMSP", "tokens", "RECEIVER"), ("EMSP", "commands", "RECEIVER"),
])
def test_a_2_1_1_caller_talks_to_the_interface_of_the_opposite_role(party_role: str, module: str,
                                                                  role: str) -> None:
    assert hub_interface_211(party_role, module) == role


def test_2_1_1_knows_cpos_and_emsps_only_and_not_every_module() -> None:
    with pytest.raises(InvalidParameters, match="CPOs or eMSPs"):
        hub_interface_211("NSP", "locations")
    with pytest.raises(InvalidParameters, match="no chargingprofiles"):
        hub_interface_211("CPO", "chargingprofiles")


@pytest.mark.parametrize(("party_role", "module", "role", "method", "segs", "to_hub"), [
    ("CPO", "locations", "RECEIVER", "PUT", ["NL", "CPA", "L1"], True),  # broadcast
    ("CPO", "tariffs", "RECEIVER", "PATCH", ["NL", "CPA", "T1"], True),
    ("CPO", "tariffs", "RECEIVER", "DELETE", ["NL", "CPA", "T1"], True),  # broadcast like its PUT
    ("CPO", "sessions", "RECEIVER", "PUT", ["NL", "CPA", "S1"], False),  # to the token's eMSP
    ("CPO", "cdrs", "RECEIVER", "POST", [], False),
    ("CPO", "tokens", "SENDER", "GET", [], True),  # GET All
    ("CPO", "tokens", "SENDER", "POST", ["U1", "authorize"], False),
    ("EMSP", "tokens", "RECEIVER", "PUT", ["DE", "EMA", "U1"], True),
    ("EMSP", "locations", "SENDER", "GET", [], True),
    ("EMSP", "locations", "SENDER", "GET", ["L1"], False),  # to the location's CPO
    ("EMSP", "commands", "RECEIVER", "POST", ["START_SESSION"], False),
])
def test_a_2_1_1_request_goes_to_the_hub_for_broadcasts_and_list_pulls(
        party_role: str, module: str, role: str, method: str, segs: list[str], to_hub: bool) -> None:
    assert addressed_to_hub_211(party_role, module, role, method, segs) is to_hub


def test_same_version_and_unchanged_modules_pass_untouched() -> None:
    body = {"id": "X", "anything": [1, 2]}
    assert translate_body("Location", "locations", body, source="2.2.1", target="2.2.1", ctx=Context()).data is body
    same = translate_body(None, "chargingprofiles", body, source="2.2.1", target="2.3.0", ctx=Context())
    assert same.data is body and same.losses == []
    with pytest.raises(InvalidParameters, match="cannot carry"):
        translate_body(None, "sessions", body, source="2.2.1", target="2.1.1", ctx=Context())
