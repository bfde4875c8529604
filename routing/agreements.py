"""Roaming agreements: which two parties may exchange which OCPI modules, and when (docs/agreements.md).

Pure data and decisions, no I/O: ``AgreementBook`` is the in-memory view every hub process routes from
(``hub/agreements.py`` keeps it in step with the store and the other processes), indexed by party pair so a
check on the routing path is one dictionary look-up and a glance at the pair's (usually one) agreements.

An agreement binds two parties, each a (country_code, party_id) pair in one role. It is symmetric: it covers
requests either way between them (a CPO pushes sessions to the eMSP, the eMSP sends it commands). Roles match
where the hub knows the role of a party in the exchange (a broadcast recipient, a ClientInfo subject, a viewer
of GET All): it must be the role the agreement names. Routing headers carry no role, so on direct requests any
agreement between the two pairs counts, whatever roles it names.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Protocol

from routing.ocpi.versions import ALL_MODULES

ALL: Final = "*"
# What an agreement may list: every functional module the hub routes, in any OCPI version.
FUNCTIONAL_MODULES: Final = frozenset(ALL_MODULES)
ROLES: Final = ("CPO", "EMSP", "NAP", "NSP", "OTHER", "SCSP")
AGREEMENT_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
REFERENCE_MAX: Final = 500


class Policy(StrEnum):
    """The hub-wide roaming policy (``HUB_ROAMING_POLICY``), or one platform's override of it."""

    OPEN = "open"  # every pair may exchange every module (no agreement needed)
    AGREEMENTS = "agreements"  # only what an agreement in force covers


class AgreementStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class PartyLike(Protocol):
    """A party as the callers hold it: routing headers (no role), or the hub's records (with a role); ``key`` is
    ``CC:PID`` upper-case (both kinds upper-case their fields)."""

    @property
    def country_code(self) -> str: ...

    @property
    def party_id(self) -> str: ...

    @property
    def key(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PartyRef:
    """One side of an agreement (or of a check): a party pair, and its role when known."""

    country_code: str
    party_id: str
    role: str | None = None

    @property
    def key(self) -> str:
        return f"{self.country_code}:{self.party_id}"

    def __str__(self) -> str:
        return f"{self.country_code}/{self.party_id}" + (f" ({self.role})" if self.role else "")

    @classmethod
    def of(cls, party: PartyLike) -> PartyRef:
        """Any party object, upper-cased as OCPI compares CiStrings; its ``role`` kept when it has one."""
        if isinstance(party, PartyRef):
            return party
        role = getattr(party, "role", None)
        return cls(party.country_code.upper(), party.party_id.upper(), role.upper() if role else None)

    @classmethod
    def parse(cls, text: str, *, role_required: bool = False) -> PartyRef:
        """``CC:PID`` or ``CC:PID:ROLE`` (``/`` also separates); ValueError naming what is wrong."""
        parts = re.split(r"[:/]", text.strip())
        if len(parts) not in (2, 3) or (role_required and len(parts) != 3):
            shape = "CC:PID:ROLE, e.g. NL:CPA:CPO" if role_required else "CC:PID or CC:PID:ROLE, e.g. NL:CPA"
            raise ValueError(f"a party is {shape} (got {text.strip()[:40]!r})")
        cc, pid = parts[0].upper(), parts[1].upper()
        if not re.fullmatch(r"[A-Z]{2}", cc):
            raise ValueError(f"country code {parts[0][:10]!r} is not two letters")
        if not re.fullmatch(r"[A-Z0-9]{3}", pid):
            raise ValueError(f"party id {parts[1][:10]!r} is not three letters or digits")
        role = parts[2].upper() if len(parts) == 3 else None
        if role is not None and role not in ROLES:
            raise ValueError(f"role {parts[2][:10]!r} is not one of {', '.join(ROLES)}")
        return cls(cc, pid, role)


def normalise_modules(modules: Iterable[str]) -> tuple[str, ...]:
    """Sorted, lower-case, each once; empty or containing ``*`` means every functional module: ``("*",)``."""
    given = [m.strip().lower() for m in modules if m.strip()]
    if not given or ALL in given:
        return (ALL,)
    unknown = sorted(set(given) - FUNCTIONAL_MODULES)
    if unknown:
        raise ValueError(f"unknown module {unknown[0]!r}; modules are {', '.join(sorted(FUNCTIONAL_MODULES))} "
                         "or * for all")
    return tuple(sorted(set(given)))


def timestamp(value: datetime) -> str:
    """How the hub writes an agreement's times: UTC, seconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Agreement:
    id: str
    party_a: PartyRef
    party_b: PartyRef
    valid_from: datetime
    modules: tuple[str, ...] = (ALL,)
    valid_until: datetime | None = None
    status: AgreementStatus = AgreementStatus.ACTIVE
    reference: str = ""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def validate(self) -> None:
        """Raise ValueError naming the first field that is wrong; normalises modules in place."""
        if not AGREEMENT_ID.fullmatch(self.id):
            raise ValueError("id must be 1-64 letters, digits, '.', '_' or '-'")
        for name, side in (("party_a", self.party_a), ("party_b", self.party_b)):
            if side.role is None:
                raise ValueError(f"{name} needs a role")
            PartyRef.parse(f"{side.country_code}:{side.party_id}:{side.role}", role_required=True)
        if self.party_a.key == self.party_b.key:
            raise ValueError("an agreement is between two different parties")
        self.modules = normalise_modules(self.modules)
        for name, value in (("valid_from", self.valid_from), ("valid_until", self.valid_until)):
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise ValueError(f"{name} must carry a time zone (e.g. 2025-01-01T00:00:00Z)")
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if len(self.reference) > REFERENCE_MAX:
            raise ValueError(f"reference is longer than {REFERENCE_MAX} characters")
        self.status = AgreementStatus(self.status)

    @property
    def pair(self) -> tuple[str, str]:
        return _pair(self.party_a.key, self.party_b.key)

    def covers(self, module: str | None) -> bool:
        """``None`` asks whether it covers any module at all (ClientInfo visibility): always true."""
        return module is None or self.modules == (ALL,) or module in self.modules

    def in_force(self, at: datetime) -> bool:
        return (self.status is AgreementStatus.ACTIVE and self.valid_from <= at
                and (self.valid_until is None or at < self.valid_until))

    def sides(self, a: PartyRef, b: PartyRef) -> bool:
        """Whether it binds ``a`` and ``b`` (either way round), each in its role when that is known."""
        return self._binds(a.key, a.role, b.key, b.role)

    def _binds(self, a: str, a_role: str | None, b: str, b_role: str | None) -> bool:
        x, y = self.party_a, self.party_b
        if x.key == a:
            return (a_role is None or a_role == x.role) and (b_role is None or b_role == y.role)
        return (a_role is None or a_role == y.role) and (b_role is None or b_role == x.role)

    def other(self, key: str) -> PartyRef:
        return self.party_b if self.party_a.key == key else self.party_a

    def side(self, key: str) -> PartyRef:
        return self.party_a if self.party_a.key == key else self.party_b

    def why_not(self, at: datetime) -> str:
        """Why an agreement that covers the exchange does not allow it now."""
        if self.status is AgreementStatus.SUSPENDED:
            return f"agreement {self.id} is suspended"
        if at < self.valid_from:
            return f"agreement {self.id} is valid from {timestamp(self.valid_from)}"
        assert self.valid_until is not None
        return f"agreement {self.id} ended on {timestamp(self.valid_until)}"


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str


class AgreementBook:
    """Every agreement, indexed by party pair and by party; ``check`` is what enforcement asks."""

    def __init__(self, agreements: Iterable[Agreement] = ()) -> None:
        self._by_id: dict[str, Agreement] = {}
        self._by_pair: dict[tuple[str, str], tuple[Agreement, ...]] = {}
        # Per pair, what the routing path compares, worked out once per change: (agreement, active, modules or
        # None for all, valid_from and valid_until as epoch seconds).
        self._fast: dict[tuple[str, str], tuple[tuple[Agreement, bool, frozenset[str] | None, float, float], ...]] = {}
        self._by_party: dict[str, tuple[Agreement, ...]] = {}
        self.replace_all(agreements)

    # -- changes (hub/agreements.py keeps the book in step with the store) ---------------------------------
    def replace_all(self, agreements: Iterable[Agreement]) -> None:
        self._by_id = {a.id: a for a in agreements}
        self._reindex()

    def put(self, agreement: Agreement) -> None:
        self._by_id[agreement.id] = agreement
        self._reindex()

    def remove(self, agreement_id: str) -> Agreement | None:
        gone = self._by_id.pop(agreement_id, None)
        if gone is not None:
            self._reindex()
        return gone

    def _reindex(self) -> None:
        """Indexes are rebuilt whole and swapped in: a check never sees half of a change (changes are rare)."""
        by_pair: dict[tuple[str, str], list[Agreement]] = {}
        by_party: dict[str, list[Agreement]] = {}
        for a in sorted(self._by_id.values(), key=lambda x: (x.created_at, x.id)):
            by_pair.setdefault(a.pair, []).append(a)
            by_party.setdefault(a.party_a.key, []).append(a)
            by_party.setdefault(a.party_b.key, []).append(a)
        self._by_pair = {k: tuple(v) for k, v in by_pair.items()}
        self._by_party = {k: tuple(v) for k, v in by_party.items()}
        self._fast = {k: tuple((a, a.status is AgreementStatus.ACTIVE,
                                None if a.modules == (ALL,) else frozenset(a.modules), a.valid_from.timestamp(),
                                a.valid_until.timestamp() if a.valid_until else float("inf")) for a in v)
                      for k, v in by_pair.items()}

    # -- reading -------------------------------------------------------------------------------------------
    def get(self, agreement_id: str) -> Agreement | None:
        return self._by_id.get(agreement_id)

    def all(self) -> list[Agreement]:
        """Oldest first."""
        return sorted(self._by_id.values(), key=lambda a: (a.created_at, a.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def check(self, from_party: PartyLike, to_party: PartyLike, module: str | None,
              at: datetime | None = None) -> Verdict:
        """May ``from_party`` and ``to_party`` exchange ``module`` at ``at`` (default now)? With the reason.

        ``module=None`` asks for any module (ClientInfo). A party given with a role must hold that role in the
        agreement; without one any role counts.
        """
        found = self._first(from_party, to_party, module, at)
        if found is not None:
            return Verdict(True, f"agreement {found.id}")
        a, b = PartyRef.of(from_party), PartyRef.of(to_party)
        return Verdict(False, self._refusal(a, b, module, at or utcnow(), self._by_pair.get(_pair(a.key, b.key), ())))

    def allows(self, from_party: PartyLike, to_party: PartyLike, module: str | None,
               at: datetime | None = None) -> bool:
        """``check`` without building the reason of a refusal."""
        return self._first(from_party, to_party, module, at) is not None

    def _first(self, from_party: PartyLike, to_party: PartyLike, module: str | None,
               at: datetime | None) -> Agreement | None:
        """The routing path: one look-up by the pair's keys, no object built (roles read as they are)."""
        a, b = from_party.key, to_party.key
        found = self._fast.get((a, b) if a <= b else (b, a))
        if not found:
            return None
        now = time.time() if at is None else at.timestamp()
        a_role, b_role = getattr(from_party, "role", None), getattr(to_party, "role", None)
        for x, active, modules, start, end in found:
            if active and start <= now < end and (modules is None or module is None or module in modules) \
                    and x._binds(a, a_role, b, b_role):
                return x
        return None

    def partners(self, party: PartyLike, module: str | None, at: datetime | None = None,
                 roles: Iterable[str] | None = None) -> set[str]:
        """Keys ("CC:PID") of every party ``party`` holds an agreement in force with covering ``module``;
        with ``roles``, only agreements that name it in one of them."""
        me = PartyRef.of(party)
        when = at or utcnow()
        held = None if roles is None else {r.upper() for r in roles}
        return {a.other(me.key).key for a in self._by_party.get(me.key, ())
                if a.covers(module) and a.in_force(when) and (held is None or a.side(me.key).role in held)}

    @staticmethod
    def _refusal(a: PartyRef, b: PartyRef, module: str | None, at: datetime, found: tuple[Agreement, ...]) -> str:
        between = [x for x in found if x.sides(a, b)]
        covering = [x for x in between if x.covers(module)]
        if not covering:
            what = f"no agreement between {a} and {b}" + (f" covering {module}" if module else "")
            if between:
                what += " (" + "; ".join(f"{x.id} covers {', '.join(x.modules)}" for x in between) + ")"
            return what
        suspended = [x for x in covering if x.status is AgreementStatus.SUSPENDED]
        if suspended:
            return suspended[0].why_not(at)
        upcoming = sorted((x for x in covering if at < x.valid_from), key=lambda x: x.valid_from)
        if upcoming:
            return upcoming[0].why_not(at)
        ended = sorted(covering, key=lambda x: x.valid_until or at, reverse=True)
        return ended[0].why_not(at)
