"""Personal data out of stored bodies: token uids, contract ids and the like are masked before audit storage."""

from __future__ import annotations

from typing import Any

# Fields that identify a driver or a charge card (OCPI Token, CdrToken, commands, sessions, CDRs).
SENSITIVE = frozenset({
    "uid", "contract_id", "visual_number", "auth_id", "group_id", "authorization_reference", "license_plate",
    "token", "email", "phone", "name", "vehicle_id", "response_url", "driver", "energy_contract",
})
MASK = "***"


def redact(value: Any) -> Any:
    """A copy of a JSON value with every sensitive field's value masked, at any depth."""
    if isinstance(value, dict):
        return {k: (MASK if k in SENSITIVE and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redact_path(path: str) -> str:
    """A request path as the audit keeps it: token uids masked, as ``redact`` masks them in bodies.

    Only the tokens module carries personal data in its path (session, CDR and location ids identify no driver).
    Every other path costs one substring test. An uid holding an encoded '/' decodes into several parts: all of
    them are masked. Paths: ``/ocpi/{2.2.1|2.3.0}/{receiver|sender}/tokens/...`` and ``/ocpi/2.1.1/tokens/...``
    (no role in the path: ``{cc}/{pid}/{uid}`` pushed by an eMSP, ``{uid}/authorize`` asked by a CPO).
    """
    if "/tokens/" not in path:
        return path
    parts = path.split("/")
    if len(parts) < 5 or parts[1] != "ocpi":
        return path
    if parts[3] in ("receiver", "sender") and parts[4] == "tokens":
        at, role = 4, parts[3]
    elif parts[3] == "tokens":
        at, role = 3, None
    else:
        return path
    rest = parts[at + 1:]
    authorize = len(rest) > 1 and rest[-1] == "authorize"
    if role == "receiver" or (role is None and len(rest) >= 3 and not authorize):
        return "/".join([*parts[:at + 3], MASK]) if len(rest) > 2 else path
    if rest and rest != [""]:
        return "/".join([*parts[:at + 1], MASK, *(["authorize"] if authorize else [])])
    return path
