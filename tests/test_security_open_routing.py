"""Open-routing hints cannot be poisoned or leak (docs/security.md, "Open-routing hints").

A token's route is learned only from the token's owner (the eMSP named in the push's path, which is the sender);
a key claimed by several parties is refused with 404/4001 without naming any of them.
"""

from __future__ import annotations

import pytest

from tests.conftest import HubHarness, cpo, emsp
from tests.partners import FakePartner
from tests.test_open_routing import HUB, command_responder, received, token


@pytest.fixture
async def parties(hub: HubHarness) -> tuple[FakePartner, FakePartner, FakePartner, FakePartner]:
    """Two CPOs (NL/CPA, NL/CPB) and two eMSPs (DE/EMA, DE/EMB), all CONNECTED."""
    cpa, cpb = cpo(), cpo(name="Other CPO", pid="CPB")
    ema, emb = emsp(), emsp(name="Other eMSP", pid="EMB")
    for partner in (cpa, cpb):
        partner.responder = command_responder
    for partner in (cpa, cpb, ema, emb):
        await hub.connect(partner)
    return cpa, cpb, ema, emb


async def test_a_token_pushed_by_a_party_that_is_not_an_emsp_teaches_the_hub_nothing(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    """A CPO pushing a token object under its own party (accepted by the receiver) cannot steer that uid's
    authorizations: only the eMSP that owns a token is learned from."""
    cpa, cpb, ema, _ = parties
    status, _, doc = await ema.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/VICTIM1", to=HUB,
                                    json=token(ema.party, "VICTIM1"))
    assert status == 200, doc
    status, _, doc = await cpa.call(hub.session, "PUT", "tokens", "RECEIVER", "NL/CPA/VICTIM1", to=cpb.party,
                                    json=token(cpa.party, "VICTIM1"))
    assert status == 200, doc
    assert len(received(cpb, "PUT", "/tokens/NL/CPA/VICTIM1")) == 1  # forwarded and accepted by the receiver
    status, _, doc = await cpb.call(hub.session, "POST", "tokens", "SENDER", "VICTIM1/authorize")
    assert status == 200 and doc["status_code"] == 1000, doc
    assert len(received(ema, "POST", "/VICTIM1/authorize")) == 1
    assert received(cpa, "POST", "/authorize") == []


async def test_a_push_under_another_emsps_party_is_refused_and_the_owner_keeps_its_route(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, emb = parties
    status, _, doc = await ema.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/VICTIM2", to=cpa.party,
                                    json=token(ema.party, "VICTIM2"))
    assert status == 200, doc
    # EMB names EMA's party in the path: refused before anything is forwarded or learned.
    status, _, doc = await emb.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/VICTIM2", to=cpa.party,
                                    json=token(ema.party, "VICTIM2"))
    assert status == 400 and doc["status_code"] == 2001, doc
    status, _, doc = await cpa.call(hub.session, "POST", "tokens", "SENDER", "VICTIM2/authorize")
    assert status == 200 and doc["status_code"] == 1000, doc
    assert len(received(ema, "POST", "/VICTIM2/authorize")) == 1
    assert received(emb, "POST", "/authorize") == []


async def test_an_ambiguous_token_is_4001_and_names_no_party(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, emb = parties
    for partner in (ema, emb):
        status, _, doc = await partner.call(
            hub.session, "PUT", "tokens", "RECEIVER",
            f"{partner.party.country_code}/{partner.party.party_id}/SHARED1", to=HUB,
            json=token(partner.party, "SHARED1"))
        assert status == 200, doc
    status, _, doc = await cpa.call(hub.session, "POST", "tokens", "SENDER", "SHARED1/authorize")
    assert status == 404 and doc["status_code"] == 4001, doc
    message = doc["status_message"]
    assert "ambiguous" in message and "OCPI-to-*" in message
    for named in ("EMA", "EMB", "DE/", "DE:"):
        assert named not in message, message
    assert received(ema, "POST", "/authorize") == [] and received(emb, "POST", "/authorize") == []
