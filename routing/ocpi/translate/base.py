"""The translation contract: one object kind, one step between adjacent versions, and a loss report.

Translators are pure functions over decoded JSON. Each is registered for one *kind* of object (``Location``,
``Session``, ...) and one *step* between adjacent versions (2.1.1 ⇄ 2.2.1, 2.2.1 ⇄ 2.3.0); ``translate``
chains steps for 2.1.1 ⇄ 2.3.0. Whatever a step drops, defaults, derives or maps to a nearest value is written to
the ``Report`` (docs/versions.md, "Loss rules"); whatever cannot be expressed at all raises ``Untranslatable``,
which the sender gets as 400 / 2001 naming the field. Nothing is changed silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from routing.ocpi.errors import InvalidParameters
from routing.ocpi.versions import SUPPORTED, order

# Object kinds: what a request body or an answer's data holds.
LOCATION, EVSE, CONNECTOR = "Location", "EVSE", "Connector"
SESSION, CHARGING_PREFERENCES = "Session", "ChargingPreferences"
CDR = "CDR"
TARIFF = "Tariff"
TOKEN, AUTHORIZATION_INFO, LOCATION_REFERENCES = "Token", "AuthorizationInfo", "LocationReferences"
START_SESSION, STOP_SESSION, RESERVE_NOW = "StartSession", "StopSession", "ReserveNow"
CANCEL_RESERVATION, UNLOCK_CONNECTOR = "CancelReservation", "UnlockConnector"
COMMAND_RESPONSE = "CommandResponse"  # the receiver's synchronous answer to a command POST
COMMAND_RESULT = "CommandResult"  # the asynchronous result posted to response_url (2.1.1: a CommandResponse)

# Loss rules (docs/versions.md): the rule names a report uses.
DROPPED = "dropped"  # the field or value has no counterpart in the target version
DEFAULTED = "defaulted"  # the target requires a value the source does not carry: a documented default is sent
DERIVED = "derived"  # computed from other data (the owner from the connection, incl_vat from taxes, ...)
MAPPED = "mapped"  # an enum value the target lacks, sent as its nearest documented counterpart


@dataclass(frozen=True, slots=True)
class Loss:
    """One change a translation made beyond a rename: where (JSON path in the object the step read), which
    rule, and in which step."""

    path: str
    rule: str
    detail: str
    step: str  # e.g. "2.2.1>2.1.1"

    def as_dict(self) -> dict[str, str]:
        return {"field": self.path, "rule": self.rule, "detail": self.detail, "step": self.step}


@dataclass
class Context:
    """What a translation may need besides the object.

    ``owner``: the (country_code, party_id) owning the object: 2.1.1 objects carry none, so going up it is filled
    from the URL path or the connection's one party. ``counterpart``: the party the message is for (the eMSP of
    a session's token, ...), when the router knows it. ``partial``: a PATCH body: translate only the fields
    present, default nothing.
    """

    owner: tuple[str, str] | None = None
    counterpart: tuple[str, str] | None = None
    partial: bool = False


class Untranslatable(InvalidParameters):
    """Raised when a value cannot be expressed in the target version at all (HTTP 400, OCPI 2001)."""

    def __init__(self, path: str, reason: str, target: str) -> None:
        super().__init__(f"field '{path}' cannot be expressed in OCPI {target}: {reason}")
        self.path = path


@dataclass
class Report:
    """Collects the losses of one step; ``path`` prefixes are joined by the translators as they descend."""

    step: str
    target: str
    losses: list[Loss] = field(default_factory=list)

    def add(self, path: str, rule: str, detail: str) -> None:
        self.losses.append(Loss(path, rule, detail, self.step))

    def refuse(self, path: str, reason: str) -> Untranslatable:
        return Untranslatable(path, reason, self.target)


@dataclass
class Translated:
    data: Any
    losses: list[Loss] = field(default_factory=list)


# A step translates ``data`` (one object of its kind, or a partial one) and reports into ``report``.
Step = Callable[[Any, Context, Report], Any]
_STEPS: dict[tuple[str, str, str], Step] = {}


def step(kind: str, source: str, target: str) -> Callable[[Step], Step]:
    """Registers a translator for one kind between two adjacent versions."""

    def register(fn: Step) -> Step:
        _STEPS[(kind, source, target)] = fn
        return fn

    return register


def path_of(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _chain(source: str, target: str) -> list[tuple[str, str]]:
    ladder = list(SUPPORTED[::-1])  # 2.1.1, 2.2.1, 2.3.0
    i, j = ladder.index(source), ladder.index(target)
    rungs = ladder[i:j + 1] if i <= j else ladder[j:i + 1][::-1]
    return list(pairwise(rungs))


def translate(kind: str, data: Any, *, source: str, target: str, ctx: Context | None = None) -> Translated:
    """``data`` of ``kind`` in OCPI ``source`` as OCPI ``target``, with the losses of every step on the way.

    Same version: the object itself, no loss. A kind without a translator for a step is copied unchanged by that
    step only if it is identical in both versions (registered as such); otherwise ``LookupError``: a bug, never
    a silent pass.
    """
    if source == target:
        return Translated(data)
    if order(source) < 0 or order(target) < 0:
        raise ValueError(f"unsupported OCPI version {source} or {target}")
    ctx = ctx or Context()
    losses: list[Loss] = []
    for a, b in _chain(source, target):
        fn = _STEPS.get((kind, a, b))
        if fn is None:
            raise LookupError(f"no translator for {kind} from OCPI {a} to {b}")
        report = Report(step=f"{a}>{b}", target=target)
        try:
            data = fn(data, ctx, report)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            # The translators read objects of the shape OCPI gives them; what a partner sends may have any other
            # (a list for an object, a number for a token): it is refused like an untranslatable value, never a 500.
            raise Untranslatable(kind, f"not a well-formed OCPI {a} {kind} ({type(exc).__name__})", target) from None
        losses.extend(report.losses)
    return Translated(data, losses)


def translatable(kind: str, source: str, target: str) -> bool:
    """Whether every step between the two versions has a translator for ``kind``."""
    return source == target or all((kind, a, b) in _STEPS for a, b in _chain(source, target))


def identical(kind: str, a: str, b: str) -> None:
    """Registers ``kind`` as unchanged between two adjacent versions (both directions): a copy, no loss."""

    def copy(data: Any, ctx: Context, report: Report) -> Any:
        return data

    _STEPS[(kind, a, b)] = copy
    _STEPS[(kind, b, a)] = copy
