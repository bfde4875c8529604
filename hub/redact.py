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


_TOKENS_RECEIVER = "/ocpi/2.2.1/receiver/tokens/"  # {cc}/{pid}/{uid}: the uid from the 8th part on
_TOKENS_SENDER = "/ocpi/2.2.1/sender/tokens/"  # {uid}[/authorize]: the uid from the 6th part on


def redact_path(path: str) -> str:
    """A request path as the audit keeps it: token uids masked, as ``redact`` masks them in bodies.

    Only the tokens module carries personal data in its path (session, CDR and location ids identify no driver).
    Every other path costs one substring test. An uid holding an encoded '/' decodes into several parts: all of
    them are masked.
    """
    if "/tokens/" not in path:
        return path
    parts = path.split("/")
    if path.startswith(_TOKENS_RECEIVER) and len(parts) > 7:
        return "/".join([*parts[:7], MASK])
    if path.startswith(_TOKENS_SENDER) and len(parts) > 5 and parts[5:] != [""]:
        tail = ["authorize"] if len(parts) > 6 and parts[-1] == "authorize" else []
        return "/".join([*parts[:5], MASK, *tail])
    return path
