"""The platform view of a process (hub/registry.py) kept in step with the store without reading every platform:
two registries on one store stand for two hub processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from hub.registry import LOAD_BATCH, PlatformRegistry
from hub.store.sqlite import SqliteStore
from routing.platform import Party, Platform, hash_token


class CountingStore(SqliteStore):
    """The SQLite store, counting the platforms a view reads in full."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.read: list[str] = []
        self.calls = 0

    async def get_platforms(self, platform_ids: Sequence[str]) -> list[Platform]:
        self.read += platform_ids
        self.calls += 1
        return await super().get_platforms(platform_ids)


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    s = CountingStore()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def platform(n: int, **fields: object) -> Platform:
    values: dict[str, object] = {"name": f"Platform {n}", "parties": [Party("NL", f"C{n:02d}", "CPO")],
                                 "inbound_token_hash": hash_token(f"token-{n}"), **fields}
    return Platform(id=f"p{n}", **values)  # type: ignore[arg-type]


async def test_a_reload_reads_only_what_changed_and_nothing_when_nothing_did(store: CountingStore) -> None:
    writer, view = PlatformRegistry(store), PlatformRegistry(store)
    for n in range(LOAD_BATCH + 20):
        await writer.save(platform(n))
    await view.load()
    assert len(view.all()) == LOAD_BATCH + 20 and store.calls == 2  # in batches: the loop runs between them
    store.read.clear()

    await view.load()
    assert store.read == []

    changed = platform(3, name="renamed", parties=[Party("NL", "NEW", "CPO")],
                       inbound_token_hash=hash_token("token-rotated"))
    changed.revision = writer.get("p3").revision  # type: ignore[union-attr]
    await writer.save(changed)
    await view.load()
    assert store.read == ["p3"]
    assert view.get("p3").name == "renamed"  # type: ignore[union-attr]
    assert view.by_party("NL", "NEW") is not None and view.by_party("NL", "C03") is None
    found = await view.by_token(["token-rotated"])
    assert found is not None and found[0].id == "p3"
    assert await view.by_token(["token-3"]) is None


async def test_single_changes_update_token_and_party_lookups(store: CountingStore) -> None:
    registry = PlatformRegistry(store)
    for n in range(5):
        await registry.save(platform(n))
    await registry.save(platform(1, parties=[Party("DE", "ABC", "EMSP")], inbound_token_hash=hash_token("new-1")))
    await registry.save(platform(2, removed=True))
    other = PlatformRegistry(store)  # another process, told of the change by a notice
    await other.load()
    await registry.save(platform(4, parties=[Party("NL", "C04", "CPO"), Party("NL", "X04", "CPO")]))
    await other.reload("p4")
    for view in (registry, other):
        assert view.by_party("DE", "ABC") is not None and view.by_party("NL", "C01") is None
        assert view.by_party("NL", "C02") is None  # removed: its party is no longer routed to
        assert view.by_party("NL", "C00") is not None and view.by_party("nl", "x04") is not None
        assert (await view.by_token(["new-1"]) or (None,))[0] is view.get("p1")
        assert await view.by_token(["token-1"]) is None
        assert (await view.by_token(["token-0"]) or (None,))[0] is view.get("p0")
