"""Locations (Location, EVSE, Connector) and Tariffs across OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md).

Two halves: every official example of these kinds makes a round trip through the other versions with every change
named by a loss (skipped where the examples are not beside the repository), and small objects of this file pin
the concrete translations, so the rules are tested on a bare clone too.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from routing.ocpi.translate import Context, Loss, Untranslatable, translatable, translate
from routing.ocpi.translate.base import CONNECTOR, DEFAULTED, DERIVED, DROPPED, EVSE, LOCATION, MAPPED, TARIFF
from tests.conftest import ocpi_examples
from tests.translation_check import assert_round_trip

OWNER = ("NL", "TNM")

# --- The official examples ----------------------------------------------------------------------------------------

# A version's examples go through each other version and back.
ROUTES = [("2.1.1", "2.2.1"), ("2.1.1", "2.3.0"), ("2.2.1", "2.1.1"), ("2.2.1", "2.3.0"), ("2.3.0", "2.2.1"),
          ("2.3.0", "2.1.1")]
_PATCHED = {"location": LOCATION, "status": EVSE, "remove_evse": EVSE, "tariff": CONNECTOR}

# Examples that cannot make the trip, and the exact refusal (field, reason) the sender gets instead.
_NOT_PUBLISHED = ("publish", "OCPI 2.1.1 has no unpublished Locations: a 2.1.1 receiver would show it")
_TAX_INCLUDED = ("elements[0].price_components[0].price",
                 "includes taxes (tax_included YES) and no vat rate is given to take them out")
REFUSED = {
    # publish=false: 2.1.1 has no unpublished Locations; sent on, a 2.1.1 eMSP would display a private location.
    **{(v, "2.1.1", f"location_example_{name}.json"): _NOT_PUBLISHED
       for v in ("2.2.1", "2.3.0")
       for name in ("uc3_destination_charger_not_published", "uc4_limited_visibility", "uc5_home_charge_point")},
    # North-American style: prices include taxes whose rate is not given, so no price excluding VAT (what 2.2.1
    # and 2.1.1 prices are) can be computed.
    ("2.3.0", "2.2.1", "tariff_20_simple_north_american_inclusive.json"): _TAX_INCLUDED,
    ("2.3.0", "2.1.1", "tariff_20_simple_north_american_inclusive.json"): _TAX_INCLUDED,
}


def classify(name: str) -> tuple[str, bool, str | None] | None:
    """(kind, partial, wrapper field) of one example file; None for other modules' files.

    ``location_hours_*`` are bare ``Hours`` objects: sent as the ``opening_times`` of a Location PATCH. The other
    ``location_energymix_*``/``location_regularhours_*`` files are Location fragments, i.e. PATCH bodies."""
    if name.startswith("location_patch_example_"):
        return _PATCHED[name.removeprefix("location_patch_example_").removesuffix(".json")], True, None
    if name == "location_put_example_add_evse.json":
        return EVSE, False, None
    if name.startswith("location_hours_"):
        return LOCATION, True, "opening_times"
    if name.startswith(("location_energymix_", "location_regularhours_")):
        return LOCATION, True, None
    if name.startswith("location_"):
        return LOCATION, False, None
    if name == "tariff_patch_example.json":
        return TARIFF, True, None
    if name.startswith(("tariff_", "tariffrestriction_")):
        return TARIFF, False, None
    return None


@pytest.mark.parametrize(("source", "via"), ROUTES, ids=[f"{s}-via-{v}" for s, v in ROUTES])
def test_every_official_example_round_trips_with_every_change_reported(source: str, via: str) -> None:
    seen = 0
    for file in ocpi_examples(source):
        cls = classify(file.name)
        if cls is None:
            continue
        kind, partial, wrap = cls
        obj: Any = json.loads(file.read_text())
        if wrap:
            obj = {wrap: obj}
        owner = (obj["country_code"], obj["party_id"]) if "country_code" in obj else OWNER
        ctx = Context(owner=owner, partial=partial)
        seen += 1
        expected = REFUSED.get((source, via, file.name))
        if expected is not None:
            with pytest.raises(Untranslatable) as refused:
                assert_round_trip(kind, obj, source=source, via=via, ctx=ctx)
            assert refused.value.path == expected[0], file.name
            assert expected[1] in str(refused.value), file.name
            continue
        assert_round_trip(kind, obj, source=source, via=via, ctx=ctx)
    assert seen >= 13, f"only {seen} Location/Tariff examples found for OCPI {source}"


def test_the_expected_refusals_name_existing_examples() -> None:
    """A renamed example must not turn an expected refusal into a silent pass."""
    for source, _via, name in REFUSED:
        assert name in {p.name for p in ocpi_examples(source)}


# --- Small examples of our own ------------------------------------------------------------------------------------


def connector_211(**extra: Any) -> dict[str, Any]:
    return {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE", "voltage": 230,
            "amperage": 16, "tariff_id": "T1", "last_updated": "2024-01-02T03:04:05Z", **extra}


def connector_221(**extra: Any) -> dict[str, Any]:
    return {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
            "max_voltage": 230, "max_amperage": 16, "tariff_ids": ["T1"], "last_updated": "2024-01-02T03:04:05Z",
            **extra}


def evse_221(*connectors: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"uid": "E1", "evse_id": "NL*TNM*E1", "status": "AVAILABLE", "capabilities": ["RESERVABLE"],
            "connectors": list(connectors) or [connector_221()], "last_updated": "2024-01-02T03:04:05Z", **extra}


def location_211(**extra: Any) -> dict[str, Any]:
    evse = {"uid": "E1", "status": "AVAILABLE", "connectors": [connector_211()], "last_updated": "2024-01-02T03:04:05Z"}
    return {"id": "L1", "type": "ON_STREET", "address": "Main 1", "city": "Gent", "postal_code": "9000",
            "country": "BEL", "coordinates": {"latitude": "51.047599", "longitude": "3.729944"}, "evses": [evse],
            "last_updated": "2024-01-02T03:04:05Z", **extra}


def location_221(**extra: Any) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "TNM", "id": "L1", "publish": True, "address": "Main 1",
            "city": "Utrecht", "postal_code": "3500", "country": "NLD",
            "coordinates": {"latitude": "52.090737", "longitude": "5.121420"}, "parking_type": "ON_STREET",
            "evses": [evse_221()], "time_zone": "Europe/Amsterdam", "last_updated": "2024-01-02T03:04:05Z", **extra}


def tariff_221(*elements: dict[str, Any], **extra: Any) -> dict[str, Any]:
    default = {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 21.0, "step_size": 1}]}
    return {"country_code": "NL", "party_id": "TNM", "id": "T1", "currency": "EUR",
            "elements": list(elements) or [default], "last_updated": "2024-01-02T03:04:05Z", **extra}


def tariff_230(*components: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "TNM", "id": "T1", "currency": "EUR",
            "elements": [{"price_components": list(components)}], "tax_included": "NO",
            "last_updated": "2024-01-02T03:04:05Z", **extra}


def losses_at(losses: list[Loss], path: str) -> list[str]:
    return [loss.rule for loss in losses if loss.path == path]


def test_every_kind_has_every_step() -> None:
    for kind in (LOCATION, EVSE, CONNECTOR, TARIFF):
        for a in ("2.1.1", "2.2.1", "2.3.0"):
            for b in ("2.1.1", "2.2.1", "2.3.0"):
                assert translatable(kind, a, b), (kind, a, b)


def test_location_type_becomes_parking_type_and_is_reported() -> None:
    out = translate(LOCATION, location_211(), source="2.1.1", target="2.2.1", ctx=Context(owner=OWNER))
    assert out.data["parking_type"] == "ON_STREET" and "type" not in out.data
    assert losses_at(out.losses, "type") == [MAPPED]
    assert (out.data["country_code"], out.data["party_id"]) == OWNER
    assert losses_at(out.losses, "country_code") == [DERIVED] and losses_at(out.losses, "party_id") == [DERIVED]
    assert out.data["publish"] is True and losses_at(out.losses, "publish") == [DEFAULTED]
    assert out.data["time_zone"] == "Europe/Brussels" and losses_at(out.losses, "time_zone") == [DERIVED]
    connector = out.data["evses"][0]["connectors"][0]
    assert (connector["max_voltage"], connector["max_amperage"], connector["tariff_ids"]) == (230, 16, ["T1"])
    assert not {"voltage", "amperage", "tariff_id"} & set(connector)


@pytest.mark.parametrize("kind", ["OTHER", "UNKNOWN"])
def test_location_type_without_parking_type_is_dropped(kind: str) -> None:
    out = translate(LOCATION, location_211(type=kind), source="2.1.1", target="2.2.1", ctx=Context(owner=OWNER))
    assert "parking_type" not in out.data and losses_at(out.losses, "type") == [DROPPED]


def test_parking_type_goes_down_as_type() -> None:
    out = translate(LOCATION, location_221(parking_type="ALONG_MOTORWAY", state="Utrecht"), source="2.2.1",
                    target="2.1.1")
    assert out.data["type"] == "OTHER" and losses_at(out.losses, "parking_type") == [MAPPED]
    assert "state" not in out.data and losses_at(out.losses, "state") == [DROPPED]
    assert not {"country_code", "party_id", "publish", "parking_type"} & set(out.data)
    assert losses_at(out.losses, "country_code") == [DROPPED]
    assert "URL path" in next(loss.detail for loss in out.losses if loss.path == "party_id")
    bare = location_221()
    del bare["parking_type"], bare["postal_code"]
    out = translate(LOCATION, bare, source="2.2.1", target="2.1.1")
    assert out.data["type"] == "UNKNOWN" and losses_at(out.losses, "type") == [DEFAULTED]
    assert out.data["postal_code"] == "" and losses_at(out.losses, "postal_code") == [DEFAULTED]


def test_a_capability_unknown_to_211_is_dropped_and_reported() -> None:
    loc = location_221(evses=[evse_221(capabilities=["RESERVABLE", "TOKEN_GROUP_CAPABLE", "RFID_READER"])])
    out = translate(LOCATION, loc, source="2.2.1", target="2.1.1")
    assert out.data["evses"][0]["capabilities"] == ["RESERVABLE", "RFID_READER"]
    assert losses_at(out.losses, "evses[0].capabilities[1]") == [DROPPED]


def test_connector_down_to_211() -> None:
    connector = connector_221(power_type="AC_2_PHASE", tariff_ids=["T1", "T2"], max_electric_power=7400)
    out = translate(CONNECTOR, connector, source="2.2.1", target="2.1.1")
    assert out.data["power_type"] == "AC_1_PHASE" and losses_at(out.losses, "power_type") == [MAPPED]
    assert out.data["tariff_id"] == "T1" and losses_at(out.losses, "tariff_ids[1]") == [DROPPED]
    assert "max_electric_power" not in out.data and losses_at(out.losses, "max_electric_power") == [DROPPED]
    assert (out.data["voltage"], out.data["amperage"]) == (230, 16)


def test_connector_standards_211_lacks_leave_out_the_connector_then_the_evse() -> None:
    loc = location_221(evses=[evse_221(connector_221(), connector_221(id="2", standard="NEMA_5_20")),
                              evse_221(connector_221(standard="GBT_DC"), uid="E2")])
    out = translate(LOCATION, loc, source="2.2.1", target="2.1.1")
    assert [e["uid"] for e in out.data["evses"]] == ["E1"]
    assert [c["id"] for c in out.data["evses"][0]["connectors"]] == ["1"]
    assert losses_at(out.losses, "evses[0].connectors[1]") == [DROPPED]
    assert losses_at(out.losses, "evses[1]") == [DROPPED]
    with pytest.raises(Untranslatable) as refused:
        translate(CONNECTOR, connector_221(standard="MCS"), source="2.3.0", target="2.2.1")
    assert refused.value.path == "standard" and "MCS" in str(refused.value)
    with pytest.raises(Untranslatable) as refused:
        translate(EVSE, evse_221(connector_221(standard="SAE_J3400")), source="2.3.0", target="2.1.1")
    assert refused.value.path == "connectors"


def test_230_fields_and_values_go_down_reported_and_unknown_fields_are_dropped() -> None:
    evse = evse_221(connector_221(capabilities=["ISO_15118_2_PLUG_AND_CHARGE"]),
                    capabilities=["RESERVABLE", "FUTURE_CAPABILITY"],
                    parking_restrictions=["EMPLOYEES", "TAXIS", "CUSTOMERS", "EV_ONLY"],
                    parking=[{"parking_id": "P1"}], accepted_service_providers=["Some eMSP"], vendor_note="x")
    loc = location_221(evses=[evse], help_phone="+3112345678", parking_places=[{"id": "P1"}],
                       facilities=["CAFE", "EV_LOUNGE"], parking_type="ROOFTOP", x_vendor={"a": 1},
                       images=[{"url": "https://x/i.png", "category": "DRONE", "type": "png"}])
    out = translate(LOCATION, loc, source="2.3.0", target="2.2.1")
    got = out.data["evses"][0]
    assert got["capabilities"] == ["RESERVABLE"]
    assert got["parking_restrictions"] == ["CUSTOMERS", "EV_ONLY"]
    assert losses_at(out.losses, "evses[0].parking_restrictions[0]") == [MAPPED]
    assert losses_at(out.losses, "evses[0].parking_restrictions[1]") == [DROPPED]
    assert losses_at(out.losses, "evses[0].parking_restrictions[2]") == [DROPPED]  # CUSTOMERS, listed already
    assert "capabilities" not in got["connectors"][0]
    assert out.data["facilities"] == ["CAFE"] and out.data["images"][0]["category"] == "OTHER"
    for path in ("help_phone", "parking_places", "parking_type", "x_vendor", "evses[0].parking",
                 "evses[0].accepted_service_providers", "evses[0].vendor_note", "evses[0].capabilities[1]",
                 "evses[0].connectors[0].capabilities", "facilities[1]"):
        assert losses_at(out.losses, path) == [DROPPED], path
    assert losses_at(out.losses, "images[0].category") == [MAPPED]
    for key in ("help_phone", "parking_places", "parking_type", "x_vendor"):
        assert key not in out.data
    # Up to 2.3.0 undocumented fields stay: 2.3.0 receivers accept them.
    up = translate(LOCATION, location_221(x_vendor={"a": 1}), source="2.2.1", target="2.3.0")
    assert up.data["x_vendor"] == {"a": 1} and up.losses == []


def test_211_undocumented_fields_are_dropped_going_up() -> None:
    out = translate(LOCATION, location_211(note="n"), source="2.1.1", target="2.2.1", ctx=Context(owner=OWNER))
    assert "note" not in out.data and losses_at(out.losses, "note") == [DROPPED]


def test_a_full_211_object_without_owner_is_refused_a_patch_is_not() -> None:
    for kind, obj in ((LOCATION, location_211()), (TARIFF, {"id": "T1", "currency": "EUR", "elements": []})):
        with pytest.raises(Untranslatable) as refused:
            translate(kind, obj, source="2.1.1", target="2.2.1")
        assert refused.value.path == "country_code" and "country_code" in str(refused.value)
    patch = translate(LOCATION, {"name": "New"}, source="2.1.1", target="2.3.0", ctx=Context(partial=True))
    assert patch.data == {"name": "New"} and patch.losses == []


def test_ids_longer_than_36_are_refused_going_up() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate(LOCATION, location_211(id="L" * 37), source="2.1.1", target="2.2.1", ctx=Context(owner=OWNER))
    assert refused.value.path == "id"
    loc = location_211()
    loc["evses"][0]["uid"] = "E" * 39
    with pytest.raises(Untranslatable) as refused:
        translate(LOCATION, loc, source="2.1.1", target="2.2.1", ctx=Context(owner=OWNER))
    assert refused.value.path == "evses[0].uid"


def test_time_zone_is_refused_where_the_country_has_several() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate(LOCATION, location_211(country="USA"), source="2.1.1", target="2.2.1", ctx=Context(owner=OWNER))
    assert refused.value.path == "time_zone"
    given = translate(LOCATION, location_211(country="USA", time_zone="America/Denver"), source="2.1.1",
                      target="2.2.1", ctx=Context(owner=OWNER))
    assert given.data["time_zone"] == "America/Denver" and losses_at(given.losses, "time_zone") == []


def test_unpublished_locations_are_refused_toward_211() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate(LOCATION, {"publish": False, "last_updated": "2024-01-02T03:04:05Z"}, source="2.2.1",
                  target="2.1.1", ctx=Context(partial=True))
    assert refused.value.path == "publish"


def test_211_hours_and_coordinates() -> None:
    hours = {"regular_hours": [{"weekday": 1, "period_begin": "08:00", "period_end": "24:00"}]}
    out = translate(LOCATION, location_211(opening_times=hours), source="2.1.1", target="2.2.1",
                    ctx=Context(owner=OWNER))
    assert out.data["opening_times"]["twentyfourseven"] is False
    assert out.data["opening_times"]["regular_hours"][0]["period_end"] == "23:59"
    assert losses_at(out.losses, "opening_times.twentyfourseven") == [DERIVED]
    assert losses_at(out.losses, "opening_times.regular_hours[0].period_end") == [MAPPED]
    down = translate(LOCATION, location_221(coordinates={"latitude": "52.09073", "longitude": "5.1214205"}),
                     source="2.2.1", target="2.1.1")
    assert down.data["coordinates"] == {"latitude": "52.090730", "longitude": "5.121420"}
    assert losses_at(down.losses, "coordinates.latitude") == [MAPPED]


def test_energy_mix_impact_source_and_category() -> None:
    mix = {"is_green_energy": False, "environ_impact": [{"source": "CARBON_DIOXIDE", "amount": 372}]}
    up = translate(LOCATION, {"energy_mix": mix}, source="2.1.1", target="2.2.1", ctx=Context(partial=True))
    assert up.data["energy_mix"]["environ_impact"] == [{"category": "CARBON_DIOXIDE", "amount": 372}]
    down = translate(LOCATION, up.data, source="2.2.1", target="2.1.1", ctx=Context(partial=True))
    assert down.data == {"energy_mix": mix}


def test_230_tariff_with_taxes_goes_down_excluding_vat() -> None:
    tariff = tariff_230({"type": "ENERGY", "price": 0.363, "vat": 21.0, "step_size": 1},
                        {"type": "FLAT", "price": 0, "step_size": 1},
                        tax_included="YES", min_price={"before_taxes": 0.50, "after_taxes": 0.605},
                        preauthorize_amount=20, vendor_field=True)
    out = translate(TARIFF, tariff, source="2.3.0", target="2.2.1")
    assert out.data["min_price"] == {"excl_vat": 0.50, "incl_vat": 0.605}
    assert out.data["elements"][0]["price_components"][0]["price"] == pytest.approx(0.3)
    assert out.data["elements"][0]["price_components"][0]["vat"] == 21.0
    assert out.data["elements"][0]["price_components"][1]["price"] == 0
    assert losses_at(out.losses, "elements[0].price_components[0].price") == [DERIVED]
    assert losses_at(out.losses, "preauthorize_amount") == [DROPPED]
    assert losses_at(out.losses, "vendor_field") == [DROPPED]
    assert not {"tax_included", "preauthorize_amount", "vendor_field"} & set(out.data)
    to_211 = translate(TARIFF, tariff, source="2.3.0", target="2.1.1")
    assert to_211.data["elements"][0]["price_components"][0] == {"type": "ENERGY", "price": pytest.approx(0.3),
                                                                  "step_size": 1}
    assert "min_price" not in to_211.data and losses_at(to_211.losses, "min_price") == [DROPPED]


def test_230_tariff_including_taxes_without_a_rate_is_refused() -> None:
    tariff = tariff_230({"type": "TIME", "price": 2.10, "step_size": 1}, tax_included="YES")
    with pytest.raises(Untranslatable) as refused:
        translate(TARIFF, tariff, source="2.3.0", target="2.2.1")
    assert refused.value.path == "elements[0].price_components[0].price"


def test_230_tariff_without_taxes_keeps_prices_and_leaves_out_vat() -> None:
    tariff = tariff_230({"type": "TIME", "price": 2.0, "vat": 0, "step_size": 1}, tax_included="N/A")
    out = translate(TARIFF, tariff, source="2.3.0", target="2.2.1")
    assert out.data["elements"][0]["price_components"][0] == {"type": "TIME", "price": 2.0, "step_size": 1}
    assert losses_at(out.losses, "tax_included") == [MAPPED]
    assert losses_at(out.losses, "elements[0].price_components[0].vat") == [DROPPED]


def test_221_tariff_goes_up_with_tax_included_no_and_price_limits() -> None:
    out = translate(TARIFF, tariff_221(max_price={"excl_vat": 10, "incl_vat": 12.1}), source="2.2.1",
                    target="2.3.0")
    assert out.data["tax_included"] == "NO" and losses_at(out.losses, "tax_included") == [DEFAULTED]
    assert out.data["max_price"] == {"before_taxes": 10, "after_taxes": 12.1}
    patch = translate(TARIFF, {"currency": "EUR"}, source="2.2.1", target="2.3.0", ctx=Context(partial=True))
    assert patch.data == {"currency": "EUR"}


def test_221_tariff_down_to_211() -> None:
    reservation = {"price_components": [{"type": "TIME", "price": 5, "vat": 21.0, "step_size": 60}],
                   "restrictions": {"reservation": "RESERVATION"}}
    normal = {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 21.0, "step_size": 1}],
              "restrictions": {"start_time": "08:00", "end_time": "00:00"}}
    out = translate(TARIFF, tariff_221(reservation, normal, type="REGULAR", start_date_time="2024-01-01T00:00:00Z"),
                    source="2.2.1", target="2.1.1")
    assert out.data["elements"] == [{"price_components": [{"type": "ENERGY", "price": 0.25, "step_size": 1}],
                                     "restrictions": {"start_time": "08:00", "end_time": "00:00"}}]
    assert losses_at(out.losses, "elements[0]") == [DROPPED]
    assert losses_at(out.losses, "elements[1].price_components[0].vat") == [DROPPED]
    assert losses_at(out.losses, "elements[0].price_components[0].vat") == []  # its element is gone already
    for key in ("type", "start_date_time", "country_code", "party_id"):
        assert key not in out.data and losses_at(out.losses, key) == [DROPPED]
    with pytest.raises(Untranslatable) as refused:
        translate(TARIFF, tariff_221(reservation), source="2.2.1", target="2.1.1")
    assert refused.value.path == "elements"


def test_211_tariff_goes_up() -> None:
    tariff = {"id": "T1", "currency": "EUR", "last_updated": "2024-01-02T03:04:05Z",
              "elements": [{"price_components": [{"type": "TIME", "price": 2, "step_size": 300}],
                            "restrictions": {"start_time": "18:00", "end_time": "24:00"}}]}
    out = translate(TARIFF, tariff, source="2.1.1", target="2.3.0", ctx=Context(owner=OWNER))
    assert out.data["elements"][0]["restrictions"]["end_time"] == "00:00"
    assert losses_at(out.losses, "elements[0].restrictions.end_time") == [MAPPED]
    assert losses_at(out.losses, "elements[0].price_components[0].vat") == [DEFAULTED]
    assert out.data["elements"][0]["price_components"][0] == {"type": "TIME", "price": 2, "step_size": 300}
    assert (out.data["country_code"], out.data["party_id"], out.data["tax_included"]) == ("NL", "TNM", "NO")


STEPS = [(LOCATION, location_211(opening_times={"regular_hours": [{"weekday": 1, "period_begin": "08:00",
                                                                    "period_end": "24:00"}]}), "2.1.1", "2.3.0"),
         (LOCATION, location_221(evses=[evse_221(connector_221(power_type="AC_2_PHASE", tariff_ids=["A", "B"]),
                                                 capabilities=["TOKEN_GROUP_CAPABLE"])]), "2.2.1", "2.1.1"),
         (LOCATION, location_221(help_phone="1", evses=[evse_221(parking_restrictions=["TENANTS"])]), "2.3.0",
          "2.1.1"),
         (EVSE, evse_221(connector_221(), connector_221(standard="MCS")), "2.3.0", "2.1.1"),
         (CONNECTOR, connector_211(), "2.1.1", "2.3.0"),
         (TARIFF, tariff_230({"type": "ENERGY", "price": 0.3, "vat": 20, "step_size": 1}, tax_included="YES",
                             max_price={"before_taxes": 1}), "2.3.0", "2.1.1"),
         (TARIFF, tariff_221(energy_mix={"is_green_energy": True,
                                         "environ_impact": [{"category": "NUCLEAR_WASTE", "amount": 1}]}),
          "2.2.1", "2.1.1")]


@pytest.mark.parametrize(("kind", "obj", "source", "target"), STEPS)
def test_translate_never_mutates_its_input(kind: str, obj: Any, source: str, target: str) -> None:
    before = copy.deepcopy(obj)
    there = translate(kind, obj, source=source, target=target, ctx=Context(owner=OWNER))
    assert obj == before
    back_input = copy.deepcopy(there.data)
    translate(kind, there.data, source=target, target=source, ctx=Context(owner=OWNER))
    assert there.data == back_input


def test_steps_round_trip_with_every_change_reported() -> None:
    for kind, obj, source, target in STEPS:
        assert_round_trip(kind, obj, source=source, via=target, ctx=Context(owner=OWNER))
