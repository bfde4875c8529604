"""The process's roaming agreements (``hub.agreements``, an ``AgreementBook``), kept in step with the store and
with every other hub process the way the platform registry is (hub/registry.py).

A change is written to the store, applied to this process's book, then announced on the ``agreements`` channel
(carried by the platform feed's subscription, ``PlatformFeed.also``); every other process reloads that agreement
from the store and acknowledges, and the change returns only once all of them did (at most 2 s). So an agreement
added, suspended or removed through one worker holds on the others by the time the admin API answers. An import
announces ``*``: every process reloads all agreements. A full reload every 15 s covers a lost notice, and a
store read never undoes a newer local write (the same sequence numbers as the registry).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from hub.registry import ChangeHook
from hub.store.protocol import AgreementStore
from routing.agreements import Agreement, AgreementBook

log = logging.getLogger("hub.agreements")

EVERYTHING = "*"  # the id announced when a whole batch changed (an import): reload all


class AgreementKeeper:
    def __init__(self, store: AgreementStore, book: AgreementBook) -> None:
        self.store = store
        self.book = book
        self.on_change: ChangeHook | None = None
        # Called with the agreements saved, once every process has them: ClientInfo tells both sides (hub/app.py).
        self.on_saved: Callable[[Sequence[Agreement]], Awaitable[None]] | None = None
        self._seq = 0
        self._touched: dict[str, int] = {}

    async def load(self) -> None:
        started = self._seq
        fresh = {a.id: a for a in await self.store.list_agreements()}
        for agreement_id, seq in self._touched.items():
            if seq > started:  # changed here while the list was read: this view is the newer one
                current = self.book.get(agreement_id)
                if current is None:
                    fresh.pop(agreement_id, None)
                else:
                    fresh[agreement_id] = current
        self.book.replace_all(fresh.values())
        self._touched = {k: v for k, v in self._touched.items() if v > started}

    async def reload(self, agreement_id: str) -> None:
        """Apply a change another process announced."""
        if agreement_id == EVERYTHING:
            await self.load()
            return
        started = self._seq
        agreement = await self.store.get_agreement(agreement_id)
        if self._touched.get(agreement_id, 0) > started:
            return
        self._touch(agreement_id)
        if agreement is None:
            self.book.remove(agreement_id)
        else:
            self.book.put(agreement)

    def _touch(self, agreement_id: str) -> None:
        self._seq += 1
        self._touched[agreement_id] = self._seq

    async def save(self, agreement: Agreement) -> None:
        await self.store.save_agreement(agreement)
        self._touch(agreement.id)
        self.book.put(agreement)
        await self._announce(agreement.id)
        await self._saved([agreement])

    async def save_all(self, agreements: Sequence[Agreement]) -> None:
        """All at once (an import): one store batch, one announcement."""
        await self.store.save_agreements(agreements)
        merged = {a.id: a for a in self.book.all()}
        for agreement in agreements:
            self._touch(agreement.id)
            merged[agreement.id] = agreement
        self.book.replace_all(merged.values())  # indexed once, not once per agreement
        await self._announce(EVERYTHING)
        await self._saved(agreements)

    async def _saved(self, agreements: Sequence[Agreement]) -> None:
        if self.on_saved is None:
            return
        try:
            await self.on_saved(agreements)
        except Exception:  # the pushes are a courtesy: the SENDER list already shows the change
            log.warning("could not push ClientInfo for %d saved agreements", len(agreements), exc_info=True)

    async def delete(self, agreement_id: str) -> bool:
        removed = await self.store.delete_agreement(agreement_id)
        self._touch(agreement_id)
        self.book.remove(agreement_id)
        await self._announce(agreement_id)
        return removed

    async def _announce(self, agreement_id: str) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(agreement_id)
        except Exception:  # the periodic full reload repairs a lost notice
            log.warning("could not announce the change of agreement %s", agreement_id, exc_info=True)
