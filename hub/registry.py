"""In-memory view of platforms, kept in step with the store, so routing never waits on the database.

Every change goes through ``save()``: the store first, then this process's view, then a notice on Redis so the
other hub processes reload that platform. A periodic full reload covers a lost notice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hub.platform import Party, Platform, hash_token, party_key
from hub.store.protocol import Store

log = logging.getLogger("hub.registry")

ChangeHook = Callable[[str], Awaitable[None]]


class PlatformRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_id: dict[str, Platform] = {}
        self._by_token: dict[str, str] = {}
        self._by_party: dict[str, str] = {}
        self.on_change: ChangeHook | None = None

    async def load(self) -> None:
        platforms = await self.store.list_platforms()
        self._by_id = {p.id: p for p in platforms}
        self._reindex()

    def _reindex(self) -> None:
        by_token: dict[str, str] = {}
        by_party: dict[str, str] = {}
        for p in self._by_id.values():
            if p.inbound_token_hash:
                by_token[p.inbound_token_hash] = p.id
            if p.token_a_hash:
                by_token[p.token_a_hash] = p.id
            if not p.removed:
                for party in p.parties:
                    by_party[party.key] = p.id
        self._by_token, self._by_party = by_token, by_party

    def _put(self, platform: Platform) -> None:
        self._by_id[platform.id] = platform
        self._reindex()

    async def save(self, platform: Platform) -> None:
        await self.store.save_platform(platform)
        self._put(platform)
        if self.on_change is not None:
            try:
                await self.on_change(platform.id)
            except Exception:  # the periodic reload repairs a lost notice
                log.warning("could not announce change of platform %s", platform.id, exc_info=True)

    async def reload(self, platform_id: str) -> None:
        platform = await self.store.get_platform(platform_id)
        if platform is None:
            self._by_id.pop(platform_id, None)
            self._reindex()
        else:
            self._put(platform)

    def get(self, platform_id: str) -> Platform | None:
        return self._by_id.get(platform_id)

    def all(self) -> list[Platform]:
        return sorted(self._by_id.values(), key=lambda p: p.created_at)

    async def by_token(self, candidates: list[str]) -> tuple[Platform, bool] | None:
        """The platform a presented token belongs to, and whether it is a pending Token A."""
        for token in candidates:
            token_hash = hash_token(token)
            platform_id = self._by_token.get(token_hash)
            platform = self._by_id.get(platform_id) if platform_id else None
            if platform is None:
                # Another process may have issued it a moment ago: ask the store before refusing.
                platform = await self.store.find_platform_by_token_hash(token_hash)
                if platform is not None:
                    self._put(platform)
            if platform is None:
                continue
            if platform.inbound_token_hash == token_hash:
                return platform, False
            if platform.token_a_hash == token_hash:
                return platform, True
        return None

    def by_party(self, country_code: str, party_id: str) -> tuple[Platform, Party] | None:
        platform_id = self._by_party.get(party_key(country_code, party_id))
        platform = self._by_id.get(platform_id) if platform_id else None
        if platform is None:
            return None
        party = platform.party(country_code, party_id)
        return (platform, party) if party is not None else None
