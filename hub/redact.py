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
