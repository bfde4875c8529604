"""How a forwarded request and its reply travel through Redis: a JSON head line, then the raw body.

The body is never re-serialised, so objects reach the receiver byte for byte (OCPI 2.2.1 Message Routing).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

import orjson


@dataclass(frozen=True, slots=True)
class Sent:
    """What the sender of a cross-version push sent (its OCPI version differs from the receiver's): kept with the
    message so that a receiver that registers again in another version before delivery gets it from this rather
    than from the copy written for its former version (routing/delivery.py ``Delivery._in_version``)."""

    version: str
    method: str
    query: str
    body: bytes


@dataclass(slots=True)
class ForwardRequest:
    method: str
    module: str
    interface_role: str
    tail: str
    query: str
    headers: dict[str, str]  # routing headers, correlation id, content type: what the receiver must see
    body: bytes = b""
    # absolute target instead of endpoint + tail + query (hub callback URLs, docs/ocpi-decisions.md, Callback URLs)
    url: str = ""
    # The receiver's Platform.revision this request was made for (pushes); 0 = none. A delivering process whose
    # view of the receiver is older reads it from the store first (docs/architecture.md, platform registry).
    receiver_revision: int = 0
    # Pushes: the OCPI version of the receiver the body, path and query were written for; "" = not recorded
    # (direct requests, or a message queued before the field existed). Once the receiver speaks a version that
    # reads it otherwise (routing/bridge.py ``reads_alike``), delivery sends what the sender sent (``sent``) or
    # translates it between 2.2.1 and 2.3.0 (``write_for``), and refuses to send it otherwise.
    receiver_version: str = ""
    # Hub pushes: the party the push comes from or is about ("CC:PID:ROLE": a broadcast's owner, a ClientInfo's
    # subject) and the party it is for (a broadcast recipient; empty: the receiving platform). Roaming agreements
    # are checked against them again when the push is delivered (docs/agreements.md).
    subject: str = ""
    recipient: str = ""
    # Store-and-forward (routing/store_forward.py): the sender's X-Request-ID and party, to keep its delivery
    # state; and the object's path and version (last_updated) a push carries, so that an older retry or replay
    # never overwrites a newer version the receiver already has.
    sender_request_id: str = ""
    sender: str = ""
    object_path: str = ""
    object_version: float = 0.0
    # Cross-version pushes only (the sender's version is not ``receiver_version``): what the sender sent. Its body
    # follows the message's body in the payload, its length in the head; same-version pushes and direct requests
    # leave it out, and a message queued before the field existed has none (docs/store-and-forward.md).
    sent: Sent | None = None

    def encode(self) -> bytes:
        head: dict[str, Any] = {"method": self.method, "module": self.module,
                                "interface_role": self.interface_role, "tail": self.tail, "query": self.query,
                                "headers": self.headers, "url": self.url}
        if self.receiver_revision:  # direct requests leave it out: their bytes stay as they were
            head["receiver_revision"] = self.receiver_revision
        if self.receiver_version:
            head["receiver_version"] = self.receiver_version
        if self.subject:
            head["subject"] = self.subject
        if self.recipient:
            head["recipient"] = self.recipient
        if self.sender_request_id:
            head["sender_request_id"], head["sender"] = self.sender_request_id, self.sender
        if self.object_path:
            head["object_path"], head["object_version"] = self.object_path, self.object_version
        if (sent := self.sent) is None:
            return orjson.dumps(head) + b"\n" + self.body
        head["sent"] = {"version": sent.version, "method": sent.method, "query": sent.query, "size": len(sent.body)}
        return orjson.dumps(head) + b"\n" + self.body + sent.body

    @classmethod
    def decode(cls, data: bytes) -> ForwardRequest:
        head, _, body = data.partition(b"\n")
        fields = orjson.loads(head)
        if (sent := fields.pop("sent", None)) is None:
            return cls(**fields, body=body)
        cut = len(body) - sent["size"]
        return cls(**fields, body=body[:cut], sent=Sent(sent["version"], sent["method"], sent["query"], body[cut:]))


@dataclass(slots=True)
class Reply:
    """What came back from the receiver, or the hub error that stands in for it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    receiver_ms: float | None = None
    hub_error: int | None = None  # 4000 / 4002 / 4003 when the receiver's answer is not relayed
    message: str = ""
    ocpi_status: int | None = None
    # Why the hub stands in for the receiver, for retry decisions (routing/retry.py): not_connected,
    # unreachable, timeout, no_endpoint, bad_url, refused_url (outbound policy), expired, internal,
    # version_changed (a push written for a version its receiver left, not translatable into its current one), or
    # not_ocpi (then receiver_status is set).
    cause: str = ""
    receiver_status: int | None = None

    @property
    def accepted(self) -> bool:
        """The receiver answered and took it: a 2xx with an OCPI 1xxx status."""
        return (self.hub_error is None and 200 <= self.status < 300 and self.ocpi_status is not None
                and 1000 <= self.ocpi_status < 2000)

    @property
    def result(self) -> str | None:
        """How the receiver did, for per-receiver metrics; None when the hub never reached out to it.

        ok: a 2xx answer with an OCPI 1xxx status; ocpi_error: any other OCPI answer (a 2xxx/3xxx status or
        an HTTP error with an envelope); not_ocpi, timeout, unreachable: no usable answer at all.
        """
        if self.hub_error is None:
            return "ok" if self.accepted else "ocpi_error"
        return self.cause if self.cause in ("not_ocpi", "timeout", "unreachable") else None

    def encode(self) -> bytes:
        head: dict[str, Any] = {"status": self.status, "headers": self.headers, "receiver_ms": self.receiver_ms,
                                "hub_error": self.hub_error, "message": self.message, "ocpi_status": self.ocpi_status,
                                "cause": self.cause, "receiver_status": self.receiver_status}
        return orjson.dumps(head) + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        """A reply another hub process published; one of a newer hub (a rolling upgrade) may carry fields this one
        does not know: the caller still gets the receiver's answer, read by the fields it knows."""
        head, _, body = data.partition(b"\n")
        values = orjson.loads(head)
        try:
            return cls(**values, body=body)
        except TypeError:
            if not isinstance(values, dict):
                raise
            return cls(**{k: v for k, v in values.items() if k in _REPLY_FIELDS}, body=body)


_REPLY_FIELDS: Final = frozenset(f.name for f in fields(Reply)) - {"body"}
