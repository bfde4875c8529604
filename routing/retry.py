"""Retry policy of hub-originated pushes (broadcast fan-out, ClientInfo): what to retry, when, and what to give up.

Transient: the receiver could not be reached, timed out, or answered 5xx. Permanent: it answered, but refused
(4xx or an OCPI 2xxx/3xxx error) — sending the same again would not help. Not connected: OCPI says not to
queue for OFFLINE parties (digest §2.10), so no retry either. Only transient failures are retried.
"""

from __future__ import annotations

import random
from typing import Literal

from routing.wire import Reply

Verdict = Literal["ok", "transient", "permanent", "not_connected"]
NOT_CONNECTED = "receiver is not connected"


def push_verdict(reply: Reply) -> Verdict:
    if reply.hub_error is not None:
        if reply.hub_error == 4003 and reply.message == NOT_CONNECTED:
            return "not_connected"
        return "transient" if reply.hub_error in (4002, 4003, 3000) else "permanent"
    if reply.status >= 500:
        return "transient"
    if reply.status >= 400 or (reply.ocpi_status is not None and reply.ocpi_status >= 2000):
        return "permanent"
    return "ok"


def describe(reply: Reply) -> str:
    if reply.hub_error is not None:
        return f"OCPI {reply.hub_error}: {reply.message}"
    return f"receiver answered HTTP {reply.status}, OCPI {reply.ocpi_status}"


def backoff(attempts: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter, so receivers coming back are not all hit at one instant."""
    delay = min(cap, base * 2.0 ** max(attempts - 1, 0))
    return float(delay * random.uniform(0.8, 1.2))
