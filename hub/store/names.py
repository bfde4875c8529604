"""Where the stores keep things and how records become documents: shared by the SQLite and Mongo stores.

Every datetime is written twice: as a datetime under its own name (readable, and what Mongo's TTL index
needs) and as integer microseconds since the epoch under ``<name>_us``. BSON dates stop at milliseconds,
so readers trust the ``_us`` value and the round-trip is exact to the microsecond, always tz-aware UTC.

A stored object's ``data`` is kept as JSON text (``data_json``) in both stores, Mongo included: BSON
refuses keys starting with ``$`` or containing ``.`` in places, reorders nothing but cannot hold every
JSON number, and the hub never queries inside the object, so text is the exact and safe choice.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from hub.audit import AuditRecord
from hub.sealing import Sealer
from hub.store.protocol import RoutedObject, StoredObject
from routing.agreements import Agreement, AgreementStatus, PartyRef, Policy
from routing.platform import ConnectionStatus, Endpoint, Party, Platform, RateLimit

PLATFORMS: Final = "platforms"
AGREEMENTS: Final = "agreements"
PARTY_RESERVATIONS: Final = "party_reservations"
AUDIT: Final = "audit"
OBJECTS: Final = "objects"
ROUTE_HINTS: Final = "route_hints"
USAGE: Final = "usage"
ROUTED: Final = "routed"

# The order of a page of stored objects, after the module: first save, then the key (ties on created_at).
OBJECT_ORDER: Final = ("created_at_us", "country_code", "party_id", "object_id")
# Routed Sessions and CDRs: their key, and the order of a page after (module, receiver): first kept, then the key.
ROUTED_KEY: Final = ("module", "receiver", "country_code", "party_id", "object_id")
ROUTED_ORDER: Final = ("kept_at_us", "country_code", "party_id", "object_id")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

AUDIT_FIELD_ORDER: Final = tuple(f.name for f in dataclasses.fields(AuditRecord))
AUDIT_FIELDS: Final = frozenset(AUDIT_FIELD_ORDER)
# Fields AuditQuery.extra may filter on by equality: scalars only; time has since/until.
AUDIT_EXTRA_FIELDS: Final = AUDIT_FIELDS - {"time", "body", "translation"}

Scalar = str | int | float | bool | None


def epoch_us(value: datetime) -> int:
    """Exact integer microseconds since the epoch; naive datetimes are refused, not guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store only takes tz-aware datetimes")
    return (value - _EPOCH) // _ONE_US


def now_us() -> int:
    """Now, in epoch microseconds: what stored expiry times are compared with."""
    return epoch_us(datetime.now(UTC))


def from_epoch_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _put_dt(doc: dict[str, Any], key: str, value: datetime | None) -> None:
    if value is None:
        doc[key] = None
        return
    doc[key] = value.astimezone(UTC)
    doc[f"{key}_us"] = epoch_us(value)


def _get_dt(doc: dict[str, Any], key: str) -> datetime | None:
    """Prefer the exact ``_us`` twin; fall back to the datetime itself (naive ones are UTC, as pymongo's)."""
    us = doc.get(f"{key}_us")
    if us is not None:
        return from_epoch_us(int(us))
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"{key}: expected a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _get_dt_required(doc: dict[str, Any], key: str) -> datetime:
    value = _get_dt(doc, key)
    if value is None:
        raise KeyError(f"document has no {key}")
    return value


def party_pairs(platform: Platform) -> list[tuple[str, str]]:
    """The (country_code, party_id) pairs a platform reserves, once each, sorted; none when removed.

    Sorted so both stores meet conflicts in the same order and report the same pair.
    """
    if platform.removed:
        return []
    return sorted({(p.country_code.upper(), p.party_id.upper()) for p in platform.parties})


def _party_to_doc(party: Party) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "country_code": party.country_code,
        "party_id": party.party_id,
        "role": party.role,
        "status": ConnectionStatus(party.status).value,
        "business_details": party.business_details,
    }
    _put_dt(doc, "last_updated", party.last_updated)
    return doc


def _party_from_doc(doc: dict[str, Any]) -> Party:
    return Party(
        country_code=doc["country_code"],
        party_id=doc["party_id"],
        role=doc["role"],
        status=ConnectionStatus(doc["status"]),
        business_details=doc.get("business_details"),
        last_updated=_get_dt_required(doc, "last_updated"),
    )


def platform_to_doc(platform: Platform, sealer: Sealer) -> dict[str, Any]:
    """The outbound token is sealed (``outbound_token_sealed``); the clear field is never written."""
    doc: dict[str, Any] = {
        "id": platform.id,
        "name": platform.name,
        "status": ConnectionStatus(platform.status).value,
        "parties": [_party_to_doc(p) for p in platform.parties],
        "outbound_token_sealed": (None if platform.outbound_token is None
                                  else sealer.seal(platform.outbound_token)),
        "versions_url": platform.versions_url,
        "version": platform.version,
        "endpoints": [{"identifier": e.identifier, "role": e.role, "url": e.url} for e in platform.endpoints],
        "allowed_hosts": list(platform.allowed_hosts),
        "removed": platform.removed,
        "revision": platform.revision,
    }
    # Absent rather than null: Mongo's sparse unique indexes skip missing fields but do index nulls.
    if platform.token_a_hash is not None:
        doc["token_a_hash"] = platform.token_a_hash
    if platform.inbound_token_hash is not None:
        doc["inbound_token_hash"] = platform.inbound_token_hash
    _put_dt(doc, "created_at", platform.created_at)
    _put_dt(doc, "updated_at", platform.updated_at)
    _put_dt(doc, "last_seen", platform.last_seen)
    if platform.rate_limit is not None:
        doc["rate_limit"] = {"rps": platform.rate_limit.rps, "burst": platform.rate_limit.burst}
    if platform.roaming_policy is not None:
        doc["roaming_policy"] = Policy(platform.roaming_policy).value
    if platform.store_forward:
        doc["store_forward"] = sorted(platform.store_forward)
    return doc


def platform_from_doc(doc: dict[str, Any], sealer: Sealer) -> Platform:
    """Opens the sealed outbound token; a clear ``outbound_token`` of an older version still loads."""
    return Platform(
        id=doc["id"],
        name=doc["name"],
        status=ConnectionStatus(doc["status"]),
        parties=[_party_from_doc(p) for p in doc.get("parties") or []],
        token_a_hash=doc.get("token_a_hash"),
        inbound_token_hash=doc.get("inbound_token_hash"),
        outbound_token=outbound_token(doc, sealer),
        versions_url=doc.get("versions_url"),
        version=doc.get("version"),
        endpoints=[Endpoint(e["identifier"], e["role"], e["url"]) for e in doc.get("endpoints") or []],
        allowed_hosts=[str(h) for h in doc.get("allowed_hosts") or []],
        removed=bool(doc.get("removed", False)),
        created_at=_get_dt_required(doc, "created_at"),
        updated_at=_get_dt_required(doc, "updated_at"),
        last_seen=_get_dt(doc, "last_seen"),
        revision=int(doc.get("revision", 0)),
        rate_limit=_rate_limit_from_doc(doc.get("rate_limit")),
        roaming_policy=Policy(doc["roaming_policy"]) if doc.get("roaming_policy") else None,
        store_forward=frozenset(str(m) for m in doc.get("store_forward") or ()),
    )


def outbound_token(doc: dict[str, Any], sealer: Sealer) -> str | None:
    sealed = doc.get("outbound_token_sealed")
    if sealed is not None:
        return sealer.open(sealed)
    clear: str | None = doc.get("outbound_token")  # stored before sealing existed; re-sealed at start
    return clear


def needs_reseal(doc: dict[str, Any], sealer: Sealer) -> bool:
    """A stored platform whose outbound token is in clear, or sealed with a key other than the first."""
    if doc.get("outbound_token") is not None:
        return True
    sealed = doc.get("outbound_token_sealed")
    return sealed is not None and not sealer.sealed_with_primary(sealed)


def resealed(doc: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    """The token fields of ``doc`` sealed with the first key: ``outbound_token_sealed`` set, the clear one gone."""
    token = outbound_token(doc, sealer)
    new = {k: v for k, v in doc.items() if k != "outbound_token"}
    new["outbound_token_sealed"] = None if token is None else sealer.seal(token)
    return new


def _rate_limit_from_doc(doc: dict[str, Any] | None) -> RateLimit | None:
    return None if not doc else RateLimit(rps=float(doc["rps"]), burst=int(doc["burst"]))


def audit_to_doc(record: AuditRecord) -> dict[str, Any]:
    # Shallow on purpose: dataclasses.asdict deep-copies every value, once per routed request.
    doc = {name: getattr(record, name) for name in AUDIT_FIELD_ORDER}
    _put_dt(doc, "time", record.time)
    return doc


def audit_from_doc(doc: dict[str, Any]) -> AuditRecord:
    fields = {k: v for k, v in doc.items() if k in AUDIT_FIELDS}
    fields["time"] = _get_dt_required(doc, "time")
    return AuditRecord(**fields)


def audit_extra_filters(extra: dict[str, Any]) -> dict[str, Scalar]:
    """Validate ``AuditQuery.extra``: equality on known scalar fields; a typo fails loudly, not silently."""
    unknown = set(extra) - AUDIT_EXTRA_FIELDS
    if unknown:
        raise ValueError(f"cannot filter audit on {sorted(unknown)}; allowed: {sorted(AUDIT_EXTRA_FIELDS)}")
    for key, value in extra.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"audit filter {key} must be a scalar, got {type(value).__name__}")
    return dict(extra)


def object_key(module: str, country_code: str, party_id: str, object_id: str) -> dict[str, str]:
    """The identity of a stored object; the party pair upper-cased, as OCPI compares it."""
    return {
        "module": module,
        "country_code": country_code.upper(),
        "party_id": party_id.upper(),
        "object_id": object_id,
    }


def object_to_doc(obj: StoredObject) -> dict[str, Any]:
    """Key fields, ``last_updated``/``created_at`` (with their ``_us`` twins) and ``data_json``."""
    if not isinstance(obj.data, dict):
        raise TypeError(f"stored object data must be a JSON object (dict), got {type(obj.data).__name__}")
    doc: dict[str, Any] = object_key(obj.module, obj.country_code, obj.party_id, obj.object_id)
    _put_dt(doc, "last_updated", obj.last_updated)
    _put_dt(doc, "created_at", obj.created_at)
    doc["data_json"] = orjson.dumps(obj.data).decode()
    doc["ocpi_version"] = obj.ocpi_version
    return doc


def object_from_doc(doc: dict[str, Any]) -> StoredObject:
    return StoredObject(
        module=doc["module"],
        country_code=doc["country_code"],
        party_id=doc["party_id"],
        object_id=doc["object_id"],
        last_updated=_get_dt_required(doc, "last_updated"),
        data=orjson.loads(doc["data_json"]),
        created_at=_get_dt_required(doc, "created_at"),
        ocpi_version=doc.get("ocpi_version") or "2.2.1",  # objects stored before versions were bridged
    )


def routed_key(module: str, receiver: str, country_code: str, party_id: str, object_id: str) -> dict[str, str]:
    """The identity of a kept Session or CDR; parties upper-cased, as OCPI compares them."""
    return {"module": module, "receiver": receiver.upper(), "country_code": country_code.upper(),
            "party_id": party_id.upper(), "object_id": object_id}


def routed_to_doc(obj: RoutedObject, sealer: Sealer) -> dict[str, Any]:
    """Key and index fields in clear, dates with their ``_us`` twins; ``data`` as sealed JSON text (``data_sealed``)
    and the id of the key that sealed it (``seal_key``)."""
    if not isinstance(obj.data, dict):
        raise TypeError(f"routed object data must be a JSON object (dict), got {type(obj.data).__name__}")
    doc: dict[str, Any] = routed_key(obj.module, obj.receiver, obj.country_code, obj.party_id, obj.object_id)
    doc.update(sender=obj.sender.upper(), receiver_platform_id=obj.receiver_platform_id, ocpi_version=obj.ocpi_version)
    for name in ("last_updated", "kept_at", "expires_at"):
        _put_dt(doc, name, getattr(obj, name))
    doc["data_sealed"] = sealer.seal(orjson.dumps(obj.data).decode())
    doc["seal_key"] = sealer.key_id
    return doc


def routed_from_doc(doc: dict[str, Any], sealer: Sealer) -> RoutedObject:
    return RoutedObject(
        module=doc["module"], country_code=doc["country_code"], party_id=doc["party_id"],
        object_id=doc["object_id"], receiver=doc["receiver"], sender=doc["sender"],
        receiver_platform_id=doc["receiver_platform_id"], ocpi_version=doc["ocpi_version"],
        last_updated=_get_dt_required(doc, "last_updated"), expires_at=_get_dt_required(doc, "expires_at"),
        kept_at=_get_dt_required(doc, "kept_at"), data=orjson.loads(sealer.open(doc["data_sealed"])),
    )


def resealed_routed(sealed: str, sealer: Sealer) -> dict[str, str]:
    """The sealed fields of a kept record, sealed again with the first key."""
    return {"data_sealed": sealer.seal(sealer.open(sealed)), "seal_key": sealer.key_id}


def _side_to_doc(side: PartyRef) -> dict[str, Any]:
    return {"country_code": side.country_code, "party_id": side.party_id, "role": side.role}


def _side_from_doc(doc: dict[str, Any]) -> PartyRef:
    return PartyRef(str(doc["country_code"]), str(doc["party_id"]), str(doc["role"]))


def agreement_to_doc(agreement: Agreement) -> dict[str, Any]:
    """A roaming agreement (routing/agreements.py); its times with their exact ``_us`` twins."""
    doc: dict[str, Any] = {
        "id": agreement.id,
        "party_a": _side_to_doc(agreement.party_a),
        "party_b": _side_to_doc(agreement.party_b),
        "modules": list(agreement.modules),
        "status": AgreementStatus(agreement.status).value,
        "reference": agreement.reference,
    }
    for name in ("valid_from", "valid_until", "created_at", "updated_at"):
        _put_dt(doc, name, getattr(agreement, name))
    return doc


def agreement_from_doc(doc: dict[str, Any]) -> Agreement:
    return Agreement(
        id=str(doc["id"]),
        party_a=_side_from_doc(doc["party_a"]),
        party_b=_side_from_doc(doc["party_b"]),
        modules=tuple(str(m) for m in doc.get("modules") or ["*"]),
        valid_from=_get_dt_required(doc, "valid_from"),
        valid_until=_get_dt(doc, "valid_until"),
        status=AgreementStatus(doc.get("status", "active")),
        reference=str(doc.get("reference") or ""),
        created_at=_get_dt_required(doc, "created_at"),
        updated_at=_get_dt_required(doc, "updated_at"),
    )


class SeenClock:
    """Epoch microseconds for route hints' ``seen``: now, but strictly increasing per store instance.

    Two hints added one after the other within the same microsecond still come back in that order.
    Across processes the wall clock decides.
    """

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        self._last = max(epoch_us(datetime.now(UTC)), self._last + 1)
        return self._last
