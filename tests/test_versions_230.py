"""OCPI 2.3.0 partners exchanging with 2.2.1 and 2.1.1 ones through the hub (docs/versions.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.context import HUB_KEY
from tests.conftest import HubHarness, ocpi_examples
from tests.partners import FakePartner, Party
from tests.test_versions_routing import partner


@dataclass
class Net230:
    hub: HubHarness
    cpo211: FakePartner
    cpo221: FakePartner
    cpo230: FakePartner
    emsp221: FakePartner
    emsp230: FakePartner


@pytest.fixture
async def net230(hub: HubHarness) -> AsyncIterator[Net230]:
    n = Net230(hub,
               cpo211=partner("CPO 2.1.1", Party("NL", "CPA", "CPO"), "2.1.1"),
               cpo221=partner("CPO 2.2.1", Party("NL", "CPB", "CPO"), "2.2.1"),
               cpo230=partner("CPO 2.3.0", Party("NL", "CPE", "CPO"), "2.3.0"),
               emsp221=partner("eMSP 2.2.1", Party("DE", "EMB", "EMSP"), "2.2.1"),
               emsp230=partner("eMSP 2.3.0", Party("DE", "EMC", "EMSP"), "2.3.0"))
    for p in (n.cpo211, n.cpo221, n.cpo230, n.emsp221, n.emsp230):
        await hub.connect(p)
    yield n


def example(version: str, name: str) -> Any:
    path: Path = next(p for p in ocpi_examples(version) if p.name == name)
    return orjson.loads(path.read_bytes())


def cdr_230(emsp: Party) -> dict[str, Any]:
    """The official 2.3.0 CDR (total_cost: before_taxes 4.0, taxes 0.4), sent by the 2.3.0 CPO to ``emsp``."""
    cdr = example("2.3.0", "cdr_example.json")
    cdr.update(country_code="NL", party_id="CPE")
    cdr["cdr_token"].update(country_code=emsp.country_code, party_id=emsp.party_id)
    return dict(cdr)


# -- Insights: the cost of a 2.3.0 CDR is its Price's before_taxes (OCPI 2.3.0 types, Price) ------------------

async def test_insights_count_the_cost_of_a_2_3_0_cdr_whatever_the_receivers_version(net230: Net230) -> None:
    hub = net230.hub
    for emsp in (net230.emsp230, net230.emsp221):
        status, _, doc = await net230.cpo230.call(hub.session, "POST", "cdrs", "RECEIVER", to=emsp.party,
                                                  json=cdr_230(emsp.party))
        assert status == 200 and doc["status_code"] == 1000, doc
    h = hub.app[HUB_KEY]
    await h.usage.flush()
    rows = await h.store.query_usage()
    got = {r.to_party: (r.count, r.kwh, r.cost, r.currency) for r in rows if r.module == "cdrs"}
    assert got == {"DE:EMC": (1, 15.342, 4.0, "EUR"), "DE:EMB": (1, 15.342, 4.0, "EUR")}, got
