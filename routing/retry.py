"""Retry policy of hub-originated pushes (broadcast fan-out, ClientInfo): what to retry, when, and what to give up.

Transient: the receiver could not be reached, timed out, or answered 5xx (an OCPI envelope or a proxy's bare
page). Permanent: it answered, but refused (4xx or an OCPI 2xxx/3xxx error), or it offers no endpoint for the
module — sending the same again would not help. Not connected: OCPI says not to
queue for OFFLINE parties (OCPI 2.2.1 Offline behaviour), so no retry either. Only transient failures are retried.
"""

from __future__ import annotations

import random
from typing import Literal

from routing.wire import Reply

Verdict = Literal["ok", "transient", "permanent", "not_connected"]
# Hub stand-ins worth another try: the receiver may be back or faster next time.
_TRANSIENT_CAUSES = frozenset({"unreachable", "timeout", "internal"})


def push_verdict(reply: Reply) -> Verdict:
    if reply.accepted:
        return "ok"
    if reply.hub_error is not None:
        return _hub_error_verdict(reply)
    return "transient" if reply.status >= 500 else "permanent"


def _hub_error_verdict(reply: Reply) -> Verdict:
    if reply.cause == "not_connected":
        return "not_connected"
    if reply.cause == "not_ocpi":
        # a bare 502/503/504 page is what a proxy in front of a restarting receiver sends; a status past 599
        # (not an HTTP status at all) is a broken receiver, as is an unreadable answer under a 2xx
        return "transient" if 500 <= (reply.receiver_status or 0) <= 599 else "permanent"
    # no endpoint for the module, an unusable URL, or a body in a version the receiver left: sending it again
    # would not help
    return "transient" if reply.cause in _TRANSIENT_CAUSES else "permanent"


def describe(reply: Reply) -> str:
    if reply.hub_error is not None:
        return f"OCPI {reply.hub_error}: {reply.message}"
    return f"receiver answered HTTP {reply.status}, OCPI {reply.ocpi_status}"


def backoff(attempts: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter, so receivers coming back are not all hit at one instant."""
    delay = min(cap, base * 2.0 ** max(attempts - 1, 0))
    return float(delay * random.uniform(0.8, 1.2))
