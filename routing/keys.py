"""Redis key and channel names of the hub; the only place they are spelt out.

Every name starts with ``{prefix}:`` — the configured prefix (default ``ocpi-hub``) in braces. The braces
make the prefix a Redis Cluster *hash tag*: a cluster hashes only the text between the first ``{`` and
``}``, so all keys of one hub land in the same slot. That is what lets one Lua script touch the ready
list, a group list, the lease set and the counters atomically, on a cluster too (the hub's queue then
lives on one shard, which is fine: it is a small, hot working set, not bulk storage). Prefixes therefore
may not contain braces.

Delivery queue layout (``P`` = ``{prefix}:``; *token* = ``group_token(receiver, group)``):

=========================  ======  ===============================================================
``P m:<id>``               hash    one message: receiver, group, token, kind, payload, deadline,
                                   origin, attempts, enqueued_at, lease (claim number holding it)
``P q:<token>``            list    message ids of one ordering group; head = message in progress
``P ready``                list    tokens of groups whose head can be claimed now
``P parked:<receiver>``    list    tokens of ready groups waiting for an in-flight slot
``P gstate``               hash    token -> r (ready) | u (ready, slot reserved) | p (parked) | l (leased)
``P leases``               zset    message id -> lease expiry (whole seconds, rounded up), or retry time
``P inflight``             hash    receiver -> in-flight slots in use (leases + reserved hand-overs)
``P pending:<receiver>``   zset    message id -> enqueued_at, whole seconds, of every unacked message (stats)
``P receivers``            set     receivers with queued messages or dead letters (stats)
``P dl:<id>``              hash    one dead letter
``P dead``                 zset    dead-letter id -> time it was dead-lettered
``P dead-of:<receiver>``   zset    the same, per receiver
``P dead-bytes``           hash    receiver -> bytes of its dead letters (the byte cap)
``P dead-evicted``         hash    receiver -> dead letters dropped by a cap or the TTL, ever
``P probe``                string  written by a process that waits for Redis to take writes again
``P wake``                 pubsub  a group became ready: idle dispatchers should claim
``P reply:<process>``      pubsub  replies for requests a process is waiting for
``P platforms``            pubsub  a platform changed: processes reload it
``P rate-used``            hash    platform id -> requests admitted so far by all processes (rate limits)
``P console-revoked:<sid>`` string  a console session that logged out; TTL = the rest of its lifetime
``P processes``            zset    live delivery engines (process id -> last heartbeat): the in-flight limit per
                                   receiver is HUB_MAX_INFLIGHT_PER_RECEIVER times their number
``P sf:<request id>``      hash    store-and-forward: "<sender>><receiver>" -> message id (TTL = window + 1 day)
``P sf-msg:<id>``          hash    store-and-forward: one message's delivery state (TTL = window + 1 day)
``P sf-waiting:<r>:<mod>`` zset    store-and-forward messages not yet delivered -> accepted at
``P sf-index``             set     "<receiver>\x1f<module>" pairs that have store-and-forward figures
``P sf-counts``            hash    "<receiver>\x1f<module>\x1f<event>" -> count (accepted, delivered, ...)
``P sf-version:<r>:<path>`` string newest last_updated (timestamp) of an object or a part of it sent to a receiver
``P sf-whole:<r>:<path>``  string newest last_updated (timestamp) of a PUT of an object sent to a receiver
=========================  ======  ===============================================================

The Lua scripts in ``routing/lua`` build ``m:``, ``q:``, ``parked:`` and ``pending:`` keys themselves for
ids that only come out of Redis (a token popped from the ready list, an id from the lease set). They
concatenate exactly as the functions below, with ``base(prefix)`` passed in.
"""

from __future__ import annotations


def check_prefix(prefix: str) -> str:
    """Reject prefixes that would break the hash tag; returns the prefix."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"key prefix must be non-empty and free of braces: {prefix!r}")
    return prefix


def base(prefix: str) -> str:
    """``{prefix}:``, the start of every name."""
    return "{" + prefix + "}:"


def pattern(prefix: str) -> str:
    """SCAN/KEYS pattern matching every key of ``prefix`` (tests, tooling)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return "{" + escaped + "}:*"


def group_token(receiver: str, group: str) -> str:
    """Name a (receiver, group) pair unambiguously: ``%`` and ``:`` in the receiver are escaped."""
    return receiver.replace("%", "%25").replace(":", "%3A") + ":" + group


def message(prefix: str, msg_id: str) -> str:
    return f"{base(prefix)}m:{msg_id}"


def group(prefix: str, token: str) -> str:
    return f"{base(prefix)}q:{token}"


def ready(prefix: str) -> str:
    return f"{base(prefix)}ready"


def parked(prefix: str, receiver: str) -> str:
    return f"{base(prefix)}parked:{receiver}"


def group_state(prefix: str) -> str:
    return f"{base(prefix)}gstate"


def leases(prefix: str) -> str:
    return f"{base(prefix)}leases"


def inflight(prefix: str) -> str:
    return f"{base(prefix)}inflight"


def pending(prefix: str, receiver: str) -> str:
    return f"{base(prefix)}pending:{receiver}"


def receivers(prefix: str) -> str:
    return f"{base(prefix)}receivers"


def dead_letter(prefix: str, msg_id: str) -> str:
    return f"{base(prefix)}dl:{msg_id}"


def dead_letters(prefix: str) -> str:
    return f"{base(prefix)}dead"


def dead_letters_of(prefix: str, receiver: str) -> str:
    return f"{base(prefix)}dead-of:{receiver}"


def dead_letter_bytes(prefix: str) -> str:
    return f"{base(prefix)}dead-bytes"


def dead_letters_evicted(prefix: str) -> str:
    return f"{base(prefix)}dead-evicted"


def probe(prefix: str) -> str:
    """A short-lived key the outage probe writes (routing/redis_health.py): can Redis take writes again?"""
    return f"{base(prefix)}probe"


def wake_channel(prefix: str) -> str:
    return f"{base(prefix)}wake"


def reply_channel(prefix: str, process_id: str) -> str:
    return f"{base(prefix)}reply:{process_id}"


def platforms_channel(prefix: str) -> str:
    return f"{base(prefix)}platforms"


def agreements_channel(prefix: str) -> str:
    """Roaming agreement changes between hub processes (hub/agreements.py), acknowledged as on ``platforms``."""
    return f"{base(prefix)}agreements"


def callback(prefix: str, callback_id: str) -> str:
    """A hub URL handed out in place of a partner's URL (response_url, Location, Link); expires by TTL."""
    return f"{base(prefix)}cb:{callback_id}"


def console_revoked(prefix: str, session_id: str) -> str:
    """A console session logged out before its end (hub/console/session.py); expires when the session would."""
    return f"{base(prefix)}console-revoked:{session_id}"


def last_seen(prefix: str) -> str:
    """Hash platform id -> unix time of the last request received from it (still-alive checks)."""
    return f"{base(prefix)}seen"


def liveness_lock(prefix: str, platform_id: str) -> str:
    """Held by the one process that runs a still-alive check of a platform."""
    return f"{base(prefix)}alive-lock:{platform_id}"


def object_lock(prefix: str, module: str, owner: str, object_id: str) -> str:
    """Held while one object broadcast to the hub is stored and its fan-out queued (hub/objects.py)."""
    return f"{base(prefix)}object-lock:{module}:{owner}:{object_id}"


def rate_used(prefix: str) -> str:
    """Hash platform id -> requests the rate limiter admitted, summed over processes (hub/ratelimit.py)."""
    return f"{base(prefix)}rate-used"


def rate_touched(prefix: str) -> str:
    """Sorted set platform id -> when its ``rate_used`` count last changed (Redis time, µs; hub/ratelimit.py)."""
    return f"{base(prefix)}rate-touched"


def sf_state(prefix: str, request_id: str) -> str:
    """Store-and-forward: the delivery states of the messages a sender sent under one request id."""
    return f"{base(prefix)}sf:{request_id}"


def sf_message(prefix: str, message_id: str) -> str:
    """Store-and-forward: the delivery state of one message."""
    return f"{base(prefix)}sf-msg:{message_id}"


def sf_waiting(prefix: str, receiver: str, module: str) -> str:
    return f"{base(prefix)}sf-waiting:{receiver}:{module}"


def sf_index(prefix: str) -> str:
    return f"{base(prefix)}sf-index"


def sf_counts(prefix: str) -> str:
    return f"{base(prefix)}sf-counts"


def sf_version(prefix: str, receiver: str, path: str) -> str:
    """The newest version of the object at ``path`` (module + ids) that reached ``receiver``."""
    return f"{base(prefix)}sf-version:{receiver}:{path}"


def sf_whole(prefix: str, receiver: str, path: str) -> str:
    """The newest version of the object at ``path`` that reached ``receiver`` whole (a PUT)."""
    return f"{base(prefix)}sf-whole:{receiver}:{path}"


def processes(prefix: str) -> str:
    """Live hub processes (delivery engines), by last heartbeat."""
    return f"{base(prefix)}processes"
