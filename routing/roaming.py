"""Enforcement of roaming agreements: the one place every path asks (docs/agreements.md, "Enforcement").

``Roaming`` answers for direct requests (routed by TO or by open routing), open-routing candidates, the
broadcast audience, queued pushes at delivery time (broadcasts, retries, dead-letter replays, ClientInfo), GET
All visibility and ClientInfo visibility. Callers never look at agreements themselves.

Policy: each platform's is its override, else the hub-wide ``HUB_ROAMING_POLICY``. An exchange is checked
when the policy of either side's platform is ``agreements`` (the stricter one wins), so a platform under
agreements is never reached by a party without one, whatever the other side's policy. With the hub open and
no platform asking for agreements (the default), every method returns at its first line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from routing.agreements import AgreementBook, PartyLike, PartyRef, Policy, Verdict
from routing.ocpi.errors import NoAgreement
from routing.platform import Party as PlatformParty
from routing.platform import Platform
from routing.wire import ForwardRequest

OPEN_REASON = "the roaming policy is open for both parties"


class Directory(Protocol):
    """The platform view (hub/registry.py)."""

    policy_overrides: dict[str, Policy]

    def by_party(self, country_code: str, party_id: str) -> tuple[Platform, PlatformParty] | None: ...

    def all(self) -> list[Platform]: ...


class Roaming:
    def __init__(self, policy: Policy, book: AgreementBook, directory: Directory) -> None:
        self.policy = Policy(policy)
        self.book = book
        self.directory = directory

    @property
    def idle(self) -> bool:
        """Nothing to enforce anywhere: the hub is open and no platform overrides that (the fast path)."""
        return self.policy is Policy.OPEN and not self.directory.policy_overrides

    def policy_of(self, platform: Platform | None) -> Policy:
        if platform is None or platform.roaming_policy is None:
            return self.policy
        return platform.roaming_policy

    def enforced(self, a: Platform | None, b: Platform | None) -> bool:
        return self.policy_of(a) is Policy.AGREEMENTS or self.policy_of(b) is Policy.AGREEMENTS

    def _platform_of(self, party: PartyLike) -> Platform | None:
        found = self.directory.by_party(party.country_code, party.party_id)
        return found[0] if found is not None else None

    def verdict(self, from_party: PartyLike, to_party: PartyLike, module: str | None,
                from_platform: Platform | None = None, to_platform: Platform | None = None) -> Verdict:
        """What the hub does with an exchange between two parties, and why (also ``GET /admin/agreements/check``).
        Platforms not given are looked up by party."""
        if self.idle:
            return Verdict(True, OPEN_REASON)
        from_platform = from_platform or self._platform_of(from_party)
        to_platform = to_platform or self._platform_of(to_party)
        if not self.enforced(from_platform, to_platform):
            return Verdict(True, OPEN_REASON)
        return self.book.check(from_party, to_party, module)

    # -- direct requests and open routing ------------------------------------------------------------------
    def check_direct(self, sender_platform: Platform, sender: PartyLike, to: PartyLike, module: str) -> None:
        """Raise ``NoAgreement`` (403 / 2001, the reason in the message) before anything is forwarded.

        Asked before the receiver is looked up, so a party without an agreement learns nothing of the other's
        connection status (not even whether it is known): ClientInfo hides that from it too."""
        if self.idle:
            return
        verdict = self.verdict(sender, to, module, from_platform=sender_platform)
        if not verdict.allowed:
            raise NoAgreement(verdict.reason)

    def route_filter(self, sender_platform: Platform, sender: PartyLike, module: str) -> Callable[[str], bool] | None:
        """Which open-routing candidates ("CC:PID") the sender may reach; None: all of them."""
        if self.idle:
            return None

        def admits(key: str) -> bool:
            cc, _, pid = key.partition(":")
            return self.verdict(sender, PartyRef(cc, pid), module, from_platform=sender_platform).allowed

        return admits

    # -- broadcast ------------------------------------------------------------------------------------------
    def audience_filter(self, sender_platform: Platform, sender: PartyRef,
                        module: str) -> Callable[[Platform, PlatformParty], bool] | None:
        """Which broadcast recipients may get the sender's push; ``sender`` carries its broadcast role."""
        if self.idle:
            return None

        def admits(platform: Platform, party: PlatformParty) -> bool:
            return self.verdict(sender, party, module, from_platform=sender_platform, to_platform=platform).allowed

        return admits

    def push_refusal(self, fwd: ForwardRequest, receiver: Platform | None) -> str | None:
        """Why a queued hub push may no longer be delivered (the agreement ended, was suspended or removed since
        it was queued), or None. Pushes queued without a subject (before agreements existed) are not judged."""
        if self.idle or not fwd.subject:
            return None
        subject = PartyRef.parse(fwd.subject)
        if fwd.recipient:  # a broadcast: its owner and one recipient party
            verdict = self.verdict(subject, PartyRef.parse(fwd.recipient), fwd.module, to_platform=receiver)
            return None if verdict.allowed else verdict.reason
        if receiver is None or self.sees(receiver, self._platform_of(subject), subject):
            return None  # ClientInfo: the receiving platform may learn of the subject
        return f"no party of platform {receiver.id} has an agreement with {subject}"

    # -- what a party may see ----------------------------------------------------------------------------------
    def visible_owners(self, viewer_platform: Platform, viewer: PartyLike, roles: Iterable[str],
                       module: str) -> set[tuple[str, str]] | None:
        """The (country_code, party_id) pairs whose objects a GET All by ``viewer`` holding ``roles`` may list;
        None: every owner's."""
        if self.idle:
            return None
        held = [PartyRef(viewer.country_code.upper(), viewer.party_id.upper(), r) for r in roles]
        owners: set[tuple[str, str]] = set()
        for platform in self.directory.all():
            if platform.removed:
                continue
            strict = self.enforced(viewer_platform, platform)
            for party in platform.parties:
                if not strict or any(self.book.allows(me, party, module) for me in held):
                    owners.add((party.country_code, party.party_id))
        return owners

    def sees(self, viewer: Platform, platform: Platform | None, party: PartyLike) -> bool:
        """Whether ``viewer`` may learn ``party``'s connection status (hubclientinfo): one of its parties holds an
        agreement in force with it, for any module."""
        if self.idle or not self.enforced(viewer, platform):
            return True
        return any(self.book.allows(mine, party, None) for mine in viewer.parties)
