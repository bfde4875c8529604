"""What a routed body is, and where a 2.1.1 request goes: the pure decisions of routing/bridge.py."""

from __future__ import annotations

import dataclasses

import pytest

from routing.bridge import (
    addressed_to_hub_211,
    from_211_copy,
    hub_interface_211,
    into_211,
    owner_from_path,
    reply_kind,
    request_kind,
    translate_body,
    whole_when_behind,
    write_for,
)
from routing.ocpi.errors import InvalidParameters
from routing.ocpi.translate import Context
from routing.wire import ForwardRequest, Reply, Sent


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


# -- a queued push whose receiver changed version: what it is sent from (docs/store-and-forward.md) ---------------

_CDR_221 = (b'{"country_code": "NL", "party_id": "CPA", "id": "C1", "currency": "EUR",\n'
            b' "total_cost": {"excl_vat": 10.0, "incl_vat": 12.1}}')


def _queued(written_for: str, sender: str | None) -> ForwardRequest:
    """A CDR POST written for a receiver on ``written_for``; ``sender``: the version its sender wrote it in, kept
    when that is another one."""
    sent = Sent(sender, "POST", "", _CDR_221) if sender is not None and sender != written_for else None
    return ForwardRequest(method="POST", module="cdrs", interface_role="RECEIVER", tail="", query="",
                          headers={"Content-Type": "application/json"}, body=b'{"id": "C1", "written": "before"}',
                          receiver_version=written_for, sent=sent)


def test_what_a_cross_version_push_keeps_travels_byte_for_byte_and_older_payloads_still_read() -> None:
    fwd = _queued("2.1.1", "2.2.1")
    again = ForwardRequest.decode(fwd.encode())
    assert again == fwd and again.sent is not None and again.sent.body == _CDR_221
    extra = f',"sent":{{"version":"2.2.1","method":"POST","query":"","size":{len(_CDR_221)}}}'.encode() + _CDR_221
    assert len(fwd.encode()) - len(dataclasses.replace(fwd, sent=None).encode()) == len(extra)
    same = _queued("2.2.1", "2.2.1")
    assert b'"sent"' not in same.encode() and ForwardRequest.decode(same.encode()) == same
    before = (b'{"method":"POST","module":"cdrs","interface_role":"RECEIVER","tail":"","query":"","headers":{},'
              b'"url":"","receiver_version":"2.1.1"}\n{"id": "C1"}')
    assert ForwardRequest.decode(before).sent is None  # queued by a hub without the field: as before


def test_a_reply_of_a_newer_hub_is_read_by_the_fields_this_one_knows() -> None:
    reply = Reply(200, {"OCPI-from-party-id": "CPA"}, b'{"status_code":1000}', 3.5, ocpi_status=1000)
    assert Reply.decode(reply.encode()) == reply
    head, _, body = reply.encode().partition(b"\n")
    newer = head[:-1] + b',"field_of_a_newer_hub":{"x":1}}\n' + body
    assert Reply.decode(newer) == reply
    for unreadable in (b"", b"[1,2]\n", b'{"headers":{}}\n'):  # no JSON, no object, no status: refused
        with pytest.raises((ValueError, TypeError)):
            Reply.decode(unreadable)


@pytest.mark.parametrize(("written_for", "sender", "now", "expected"), [
    ("2.1.1", "2.2.1", "2.2.1", ("sent", "2.2.1", "2.2.1")),  # now in the sender's version: as sent
    ("2.1.1", "2.2.1", "2.3.0", ("sent", "2.2.1", "2.3.0")),  # translated from what the sender sent
    ("2.3.0", "2.2.1", "2.2.1", ("sent", "2.2.1", "2.2.1")),
    ("2.2.1", "2.3.0", "2.1.1", None),  # into 2.1.1 from another version: needs the hub's store
    ("2.1.1", "2.1.1", "2.2.1", None),  # out of a 2.1.1 sender's message: likewise (nothing more kept)
    ("2.1.1", None, "2.2.1", None),  # queued before senders' messages were kept
    ("2.2.1", None, "2.3.0", ("queued", "2.2.1", "2.3.0")),  # the copy, translated again
])
def test_a_push_whose_receiver_moved_is_sent_from_what_its_sender_sent_where_that_serves(
        written_for: str, sender: str | None, now: str, expected: tuple[str, str, str] | None) -> None:
    got = write_for(_queued(written_for, sender), now)
    if expected is None:
        assert isinstance(got, str) and now in got and written_for in got, got
        return
    assert not isinstance(got, str), got
    assert (got.basis, got.source, got.target, got.written_for, got.method) == (*expected, written_for, "POST")
    if expected == ("sent", now, now):
        assert (got.body, got.losses) == (_CDR_221, []), "as the sender sent it"


@pytest.mark.parametrize(("written_for", "sender", "now", "asks_the_hub"), [
    ("2.1.1", "2.1.1", "2.2.1", True),  # a 2.1.1 sender's message for its 2.1.1 receiver, now on 2.2.1
    ("2.1.1", "2.1.1", "2.3.0", True),
    ("2.1.1", None, "2.3.0", True),  # queued before senders' messages were kept: its 2.1.1 copy is all there is
    ("2.1.1", "2.2.1", "2.3.0", False),  # what the sender sent serves (write_for)
    ("2.2.1", "2.3.0", "2.1.1", False),  # into 2.1.1: not this way
    ("2.1.1", "2.1.1", "2.1.1", False),
])
def test_only_a_push_whose_one_body_is_2_1_1_is_left_to_the_hubs_store_when_its_receiver_moved_up(
        written_for: str, sender: str | None, now: str, asks_the_hub: bool) -> None:
    assert from_211_copy(_queued(written_for, sender), now) is asks_the_hub


@pytest.mark.parametrize(("written_for", "sender", "now", "asks_the_hub"), [
    ("2.2.1", None, "2.1.1", True),  # a 2.2.1 sender's message for its 2.2.1 receiver, now on 2.1.1
    ("2.3.0", None, "2.1.1", True),
    ("2.2.1", "2.3.0", "2.1.1", True),  # a cross-version message: from what the sender sent
    ("2.2.1", "2.1.1", "2.1.1", False),  # the receiver now speaks the sender's version: as sent (write_for)
    ("2.1.1", "2.1.1", "2.2.1", False),  # out of 2.1.1: from_211_copy
    ("2.2.1", None, "2.3.0", False),
])
def test_a_push_into_2_1_1_from_a_newer_sender_is_left_to_the_hub_when_its_receiver_moved_down(
        written_for: str, sender: str | None, now: str, asks_the_hub: bool) -> None:
    assert into_211(_queued(written_for, sender), now) is asks_the_hub



@pytest.mark.parametrize(("module", "method", "tail", "whole"), [
    ("locations", "PUT", "NL/CPA/LOC1", True),
    ("locations", "PATCH", "NL/CPA/LOC1/EVSE1", True),
    ("locations", "PATCH", "NL/CPA/LOC1/EVSE1/1", True),
    ("sessions", "PATCH", "NL/CPA/S1", True),
    ("sessions", "PUT", "NL/CPA/S1", True),
    ("tokens", "PATCH", "DE/EMA/U1", True),
    ("tariffs", "PUT", "NL/CPA/T1", True),
    ("cdrs", "POST", "", False),
    ("commands", "POST", "START_SESSION", False),
    ("locations", "DELETE", "NL/CPA/LOC1", False),
])
def test_only_object_pushes_behind_newer_ones_go_as_the_hubs_copy(
        module: str, method: str, tail: str, whole: bool) -> None:
    fwd = ForwardRequest(method=method, module=module, interface_role="RECEIVER", tail=tail, query="", headers={},
                         body=b"{}", receiver_version="2.2.1")
    assert whole_when_behind(fwd) is whole
