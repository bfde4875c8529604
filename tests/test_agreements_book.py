"""The roaming-agreement book's decisions (routing/agreements.py): who may exchange what, when, and why not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.agreements import (
    ALL,
    Agreement,
    AgreementBook,
    AgreementStatus,
    PartyRef,
    Verdict,
    normalise_modules,
)
from routing.ocpi.headers import Party as HeaderParty
from routing.platform import Party as HubParty

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CPA = PartyRef("NL", "CPA", "CPO")
EMB = PartyRef("DE", "EMB", "EMSP")
EMC = PartyRef("DE", "EMC", "EMSP")


def agreement(agreement_id: str = "A12", a: PartyRef = CPA, b: PartyRef = EMB, **fields: object) -> Agreement:
    values: dict[str, object] = {"id": agreement_id, "party_a": a, "party_b": b,
                                 "valid_from": NOW - timedelta(days=30)}
    values.update(fields)
    made = Agreement(**values)  # type: ignore[arg-type]
    made.validate()
    return made


def test_an_agreement_in_force_allows_both_ways_and_names_itself() -> None:
    book = AgreementBook([agreement(modules=("cdrs", "sessions"))])
    assert book.check(CPA, EMB, "cdrs", NOW) == Verdict(True, "agreement A12")
    assert book.check(EMB, CPA, "sessions", NOW) == Verdict(True, "agreement A12")
    assert book.allows(EMB, CPA, "sessions", NOW)


def test_no_agreement_names_both_parties_with_roles_and_the_module() -> None:
    book = AgreementBook([agreement()])
    verdict = book.check(CPA, EMC, "cdrs", NOW)
    assert verdict == Verdict(False, "no agreement between NL/CPA (CPO) and DE/EMC (EMSP) covering cdrs")
    assert not book.allows(CPA, EMC, "cdrs", NOW)


def test_a_module_not_covered_is_refused_naming_what_the_agreement_covers() -> None:
    book = AgreementBook([agreement(modules=("locations", "tariffs"))])
    verdict = book.check(CPA, EMB, "cdrs", NOW)
    assert not verdict.allowed
    assert verdict.reason == ("no agreement between NL/CPA (CPO) and DE/EMB (EMSP) covering cdrs "
                              "(A12 covers locations, tariffs)")


@pytest.mark.parametrize("modules", [(), (ALL,), ("cdrs", ALL)])
def test_empty_or_star_covers_every_functional_module(modules: tuple[str, ...]) -> None:
    made = agreement(modules=modules)
    assert made.modules == (ALL,)
    book = AgreementBook([made])
    for module in ("locations", "cdrs", "commands", "bookings", "invoicereconciliation"):
        assert book.allows(CPA, EMB, module, NOW), module


def test_suspended_agreement_is_refused_with_its_id() -> None:
    book = AgreementBook([agreement(status=AgreementStatus.SUSPENDED)])
    assert book.check(CPA, EMB, "cdrs", NOW) == Verdict(False, "agreement A12 is suspended")


def test_not_yet_valid_agreement_says_from_when() -> None:
    book = AgreementBook([agreement(valid_from=datetime(2025, 7, 1, tzinfo=UTC))])
    assert book.check(CPA, EMB, "cdrs", NOW) == Verdict(False, "agreement A12 is valid from 2025-07-01T00:00:00Z")
    assert book.allows(CPA, EMB, "cdrs", datetime(2025, 7, 1, tzinfo=UTC))  # valid_from is inclusive


def test_ended_agreement_says_when_it_ended_and_valid_until_is_exclusive() -> None:
    end = datetime(2025, 5, 31, 23, 59, 59, tzinfo=UTC)
    book = AgreementBook([agreement(valid_until=end)])
    assert book.check(CPA, EMB, "cdrs", NOW) == Verdict(False, "agreement A12 ended on 2025-05-31T23:59:59Z")
    assert not book.allows(CPA, EMB, "cdrs", end)
    assert book.allows(CPA, EMB, "cdrs", end - timedelta(microseconds=1))


def test_one_agreement_in_force_beside_an_ended_one_allows() -> None:
    old = agreement("A1", valid_from=NOW - timedelta(days=400), valid_until=NOW - timedelta(days=35))
    new = agreement("A2")
    assert AgreementBook([old, new]).check(CPA, EMB, "cdrs", NOW) == Verdict(True, "agreement A2")


def test_suspension_is_reported_before_an_end_and_the_soonest_start_before_both() -> None:
    ended = agreement("A1", valid_until=NOW - timedelta(days=1))
    later = agreement("A3", valid_from=NOW + timedelta(days=10))
    sooner = agreement("A4", valid_from=NOW + timedelta(days=2))
    assert AgreementBook([ended, later, sooner]).check(CPA, EMB, "cdrs", NOW).reason.startswith(
        "agreement A4 is valid from")
    suspended = agreement("A2", status=AgreementStatus.SUSPENDED)
    assert AgreementBook([ended, suspended]).check(CPA, EMB, "cdrs", NOW).reason == "agreement A2 is suspended"


def test_roles_match_when_known_and_any_role_counts_without_one() -> None:
    """NL/CPA holds CPO and EMSP on its platform; the agreement binds it as CPO."""
    book = AgreementBook([agreement()])
    as_emsp = PartyRef("NL", "CPA", "EMSP")
    assert book.check(as_emsp, EMB, "cdrs", NOW) == Verdict(
        False, "no agreement between NL/CPA (EMSP) and DE/EMB (EMSP) covering cdrs")
    assert book.allows(HubParty("nl", "cpa", "CPO"), HubParty("DE", "EMB", "EMSP"), "cdrs", NOW)
    # routing headers carry no role: any agreement between the two pairs counts
    assert book.check(HeaderParty("NL", "CPA"), HeaderParty("DE", "EMB"), "cdrs", NOW).allowed
    assert book.check(HeaderParty("NL", "CPA"), HeaderParty("DE", "EMC"), "cdrs", NOW).reason == (
        "no agreement between NL/CPA and DE/EMC covering cdrs")


def test_module_none_asks_for_any_agreement_in_force() -> None:
    book = AgreementBook([agreement(modules=("tariffs",))])
    assert book.allows(CPA, EMB, None, NOW)
    assert book.check(CPA, EMC, None, NOW).reason == "no agreement between NL/CPA (CPO) and DE/EMC (EMSP)"


def test_partners_lists_parties_with_an_agreement_in_force_for_a_module_and_role() -> None:
    book = AgreementBook([
        agreement("A1", modules=("locations",)),
        agreement("A2", b=EMC, modules=("tokens",)),
        agreement("A3", b=PartyRef("BE", "NSP", "NSP"), status=AgreementStatus.SUSPENDED),
        agreement("A4", a=PartyRef("FR", "CPF", "CPO"), b=EMB),
    ])
    assert book.partners(CPA, "locations", NOW) == {"DE:EMB"}
    assert book.partners(CPA, None, NOW) == {"DE:EMB", "DE:EMC"}
    assert book.partners(EMB, "locations", NOW) == {"NL:CPA", "FR:CPF"}
    assert book.partners(EMB, "locations", NOW, roles=["CPO"]) == set()
    assert book.partners(EMB, "locations", NOW, roles=["emsp"]) == {"NL:CPA", "FR:CPF"}


def test_the_book_follows_puts_and_removals() -> None:
    book = AgreementBook()
    assert not book.allows(CPA, EMB, "cdrs", NOW) and len(book) == 0
    book.put(agreement())
    assert book.allows(CPA, EMB, "cdrs", NOW)
    book.put(agreement(status=AgreementStatus.SUSPENDED))
    assert book.check(CPA, EMB, "cdrs", NOW).reason == "agreement A12 is suspended"
    assert book.remove("A12") is not None and book.remove("A12") is None
    assert not book.allows(CPA, EMB, "cdrs", NOW) and book.get("A12") is None
    book.replace_all([agreement("B1"), agreement("B2", b=EMC)])
    assert [a.id for a in book.all()] == ["B1", "B2"] and book.partners(CPA, "cdrs", NOW) == {"DE:EMB", "DE:EMC"}


@pytest.mark.parametrize(("fields", "message"), [
    ({"id": "has space"}, "id must be"),
    ({"b": PartyRef("NL", "CPA", "EMSP")}, "two different parties"),
    ({"b": PartyRef("DE", "EMB", None)}, "party_b needs a role"),
    ({"b": PartyRef("DE", "EMB", "BOSS")}, "role 'BOSS' is not one of"),
    ({"modules": ("cdrs", "coffee")}, "unknown module 'coffee'"),
    ({"valid_until": NOW - timedelta(days=40)}, "valid_until must be after valid_from"),
    ({"valid_from": datetime(2025, 1, 1)}, "must carry a time zone"),
    ({"reference": "x" * 501}, "reference is longer"),
])
def test_invalid_agreements_are_refused_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        agreement(**fields)


def test_party_parsing_accepts_colon_or_slash_and_upper_cases() -> None:
    assert PartyRef.parse("nl:cpa:cpo") == CPA
    assert PartyRef.parse("DE/EMB") == PartyRef("DE", "EMB")
    for bad in ("NL", "NLD:CPA", "NL:CP", "NL:CPA:CPO:X", "NL:CPA:KING"):
        with pytest.raises(ValueError):
            PartyRef.parse(bad)
    with pytest.raises(ValueError, match="CC:PID:ROLE"):
        PartyRef.parse("NL:CPA", role_required=True)


def test_modules_are_normalised_sorted_lower_case_once() -> None:
    assert normalise_modules(["Sessions", "cdrs", "sessions", " "]) == ("cdrs", "sessions")
