"""Commands between OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md, "Commands").

The command bodies, the receiver's synchronous answer (``CommandResponse``) and the asynchronous result posted to
``response_url`` (2.2.1 ``CommandResult``; in 2.1.1 a ``CommandResponse`` again, whose enum also carries the
outcome). ``response_url`` is copied: the router replaces it by a hub callback URL in every version.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import Any

from routing.ocpi.translate.base import (
    CANCEL_RESERVATION,
    COMMAND_RESPONSE,
    COMMAND_RESULT,
    DEFAULTED,
    DROPPED,
    MAPPED,
    RESERVE_NOW,
    START_SESSION,
    STOP_SESSION,
    UNLOCK_CONNECTOR,
    Context,
    Report,
    step,
)
from routing.ocpi.translate.common import DISPLAY_TEXT, Fields, prune
from routing.ocpi.translate.tokens import TOKEN_221, token_211_to_221, token_221_to_211, token_230_to_221
from routing.ocpi.versions import V211, V221, V230

# A 2.1.1 CPO gives no timeout; 2.2.1 requires one: the seconds the eMSP waits for the result.
COMMAND_TIMEOUT_211 = 60

# Documented fields (OCPI mod_commands; 2.3.0 = 2.2.1 with the CommandType OpenEnum).
START_SESSION_211: Fields = {"response_url": None, "token": None, "location_id": None, "evse_uid": None}
START_SESSION_221: Fields = {**START_SESSION_211, "connector_id": None, "authorization_reference": None}
RESERVE_NOW_211: Fields = {"response_url": None, "token": None, "expiry_date": None, "reservation_id": None,
                           "location_id": None, "evse_uid": None}
RESERVE_NOW_221: Fields = {**RESERVE_NOW_211, "authorization_reference": None}
STOP: Fields = {"response_url": None, "session_id": None}
UNLOCK: Fields = {"response_url": None, "location_id": None, "evse_uid": None, "connector_id": None}
CANCEL: Fields = {"response_url": None, "reservation_id": None}
COMMAND_RESPONSE_211: Fields = {"result": None}
COMMAND_RESPONSE_221: Fields = {"result": None, "timeout": None, "message": DISPLAY_TEXT}
COMMAND_RESULT_221: Fields = {"result": None, "message": DISPLAY_TEXT}

RESPONSE_TYPES_221 = frozenset({"ACCEPTED", "NOT_SUPPORTED", "REJECTED", "UNKNOWN_SESSION"})
RESULT_TYPES_211 = frozenset({"ACCEPTED", "NOT_SUPPORTED", "REJECTED", "TIMEOUT", "UNKNOWN_SESSION"})
RESULT_TYPES_221 = frozenset({"ACCEPTED", "CANCELED_RESERVATION", "EVSE_OCCUPIED", "EVSE_INOPERATIVE", "FAILED",
                              "NOT_SUPPORTED", "REJECTED", "TIMEOUT", "UNKNOWN_RESERVATION"})


def _message(text: str) -> list[dict[str, str]]:
    return [{"language": "en", "text": text}]


def _token_command_up(data: Any, ctx: Context, report: Report, fields: Fields) -> Any:
    """2.1.1 → 2.2.1 for a command carrying a Token: the token per the Token rules, its owner ``ctx.owner`` (the
    eMSP sending the command)."""
    out = prune(data, fields, "", report, V211)
    if "token" in out:
        out["token"] = token_211_to_221(out["token"], ctx, report, "token")
    return out


def _token_command_down(data: Any, report: Report, fields: Fields, extra: tuple[str, ...]) -> Any:
    """2.2.1 → 2.1.1 for a command carrying a Token: the token per the Token rules, ``extra`` fields dropped."""
    out = prune(data, fields, "", report, V221)
    if "token" in out:
        out["token"] = token_221_to_211(out["token"], report, "token")
    for key in extra:
        if key in out:
            del out[key]
            report.add(key, DROPPED, f"a 2.1.1 command has no {key}")
    return out


def _copy_up(data: Any, ctx: Context, report: Report) -> Any:
    """2.2.1 → 2.3.0: the same objects; fields 2.3.0 does not document are kept (2.3.0 tolerates them)."""
    return deepcopy(data)


def _pruned(fields: Fields, version: str) -> Callable[[Any, Context, Report], Any]:
    def translate(data: Any, ctx: Context, report: Report) -> Any:
        return prune(data, fields, "", report, version)
    return translate


def _token_230_to_221(fields: Fields) -> Callable[[Any, Context, Report], Any]:
    def translate(data: Any, ctx: Context, report: Report) -> Any:
        out = prune(data, {**fields, "token": None}, "", report, V230)
        if "token" in out:
            out["token"] = token_230_to_221(out["token"], report, "token")
        return out
    return translate


# --- StartSession --------------------------------------------------------------------------------------------

@step(START_SESSION, V211, V221)
def start_session_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    return _token_command_up(data, ctx, report, START_SESSION_211)


@step(START_SESSION, V221, V211)
def start_session_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    """``connector_id``: the 2.1.1 CPO chooses the connector; ``authorization_reference``: none in 2.1.1."""
    return _token_command_down(data, report, START_SESSION_221, ("connector_id", "authorization_reference"))


step(START_SESSION, V221, V230)(_copy_up)
step(START_SESSION, V230, V221)(_token_230_to_221({**START_SESSION_221, "token": TOKEN_221}))


# --- ReserveNow ----------------------------------------------------------------------------------------------

@step(RESERVE_NOW, V211, V221)
def reserve_now_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    """``reservation_id``: 2.1.1 int → its decimal string (the same id)."""
    out = _token_command_up(data, ctx, report, RESERVE_NOW_211)
    if isinstance(out.get("reservation_id"), int) and not isinstance(out["reservation_id"], bool):
        out["reservation_id"] = str(out["reservation_id"])
    return out


@step(RESERVE_NOW, V221, V211)
def reserve_now_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    """``reservation_id``: only a canonical decimal string is an int (``"7"``, not ``"007"`` or ``"R7"``)."""
    out = _token_command_down(data, report, RESERVE_NOW_221, ("authorization_reference",))
    if "reservation_id" in out:
        out["reservation_id"] = reservation_id_down(out["reservation_id"], report)
    return out


def reservation_id_down(value: Any, report: Report) -> int:
    if isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit() and str(int(value)) == value:
        return int(value)
    raise report.refuse("reservation_id", "a 2.1.1 reservation_id is an int: only a decimal number converts")


step(RESERVE_NOW, V221, V230)(_copy_up)
step(RESERVE_NOW, V230, V221)(_token_230_to_221({**RESERVE_NOW_221, "token": TOKEN_221}))


# --- StopSession, UnlockConnector: the same fields in every version --------------------------------------------

step(STOP_SESSION, V211, V221)(_pruned(STOP, V211))
step(STOP_SESSION, V221, V211)(_pruned(STOP, V221))
step(STOP_SESSION, V221, V230)(_copy_up)
step(STOP_SESSION, V230, V221)(_pruned(STOP, V230))
step(UNLOCK_CONNECTOR, V211, V221)(_pruned(UNLOCK, V211))
step(UNLOCK_CONNECTOR, V221, V211)(_pruned(UNLOCK, V221))
step(UNLOCK_CONNECTOR, V221, V230)(_copy_up)
step(UNLOCK_CONNECTOR, V230, V221)(_pruned(UNLOCK, V230))


# --- CancelReservation: no 2.1.1 counterpart -----------------------------------------------------------------

@step(CANCEL_RESERVATION, V221, V211)
def cancel_reservation_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    """2.1.1 has no CANCEL_RESERVATION: refused (the hub answers the eMSP NOT_SUPPORTED itself)."""
    raise report.refuse("reservation_id", "2.1.1 has no CANCEL_RESERVATION command")


@step(CANCEL_RESERVATION, V211, V221)
def cancel_reservation_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    """A 2.1.1 party cannot send one; refused rather than a missing translator (a 500)."""
    raise report.refuse("reservation_id", "2.1.1 has no CANCEL_RESERVATION command")


step(CANCEL_RESERVATION, V221, V230)(_copy_up)
step(CANCEL_RESERVATION, V230, V221)(_pruned(CANCEL, V230))


# --- CommandResponse: the synchronous answer -----------------------------------------------------------------

def _as_object(data: Any) -> Any:
    """2.1.1 (tag 2.1.1) printed the answer as a bare CommandResponseType; 2.1.1-d2 corrected it to a
    CommandResponse object. Both are accepted."""
    return {"result": data} if isinstance(data, str) else data


@step(COMMAND_RESPONSE, V211, V221)
def command_response_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    """``TIMEOUT`` is no longer a synchronous answer in 2.2.1: REJECTED with the message TIMEOUT. ``timeout``,
    required in 2.2.1, is ``COMMAND_TIMEOUT_211`` seconds."""
    out = prune(_as_object(data), COMMAND_RESPONSE_211, "", report, V211)
    result = out.get("result")
    if result is not None and result not in RESPONSE_TYPES_221:
        out["result"] = "REJECTED"
        out["message"] = _message(str(result))
        report.add("result", MAPPED, f"{result} -> REJECTED with the message {result}: no 2.2.1 CommandResponseType")
    if not ctx.partial:
        out["timeout"] = COMMAND_TIMEOUT_211
        report.add("timeout", DEFAULTED, f"{COMMAND_TIMEOUT_211} s: 2.1.1 CPOs announce no timeout")
    return out


@step(COMMAND_RESPONSE, V221, V211)
def command_response_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    """Sent as the CommandResponse object (2.1.1-d2); ``timeout`` and ``message`` have no 2.1.1 counterpart."""
    out = prune(data, COMMAND_RESPONSE_221, "", report, V221)
    for key in ("timeout", "message"):
        if key in out:
            del out[key]
            report.add(key, DROPPED, f"a 2.1.1 CommandResponse has no {key}")
    return out


step(COMMAND_RESPONSE, V221, V230)(_copy_up)
step(COMMAND_RESPONSE, V230, V221)(_pruned(COMMAND_RESPONSE_221, V230))


# --- CommandResult: the asynchronous result (2.1.1: a CommandResponse) -----------------------------------------

@step(COMMAND_RESULT, V211, V221)
def command_result_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    """2.1.1 async CommandResponse → 2.2.1 CommandResult; UNKNOWN_SESSION (no 2.2.1 result) → REJECTED with
    the message UNKNOWN_SESSION."""
    out = prune(_as_object(data), COMMAND_RESPONSE_211, "", report, V211)
    result = out.get("result")
    if result is not None and result not in RESULT_TYPES_221:
        out["result"] = "REJECTED"
        out["message"] = _message(str(result))
        report.add("result", MAPPED, f"{result} -> REJECTED with the message {result}: no 2.2.1 CommandResultType")
    return out


@step(COMMAND_RESULT, V221, V211)
def command_result_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    """2.2.1 CommandResult → the 2.1.1 async CommandResponse: results 2.1.1 lacks (CANCELED_RESERVATION,
    EVSE_OCCUPIED, EVSE_INOPERATIVE, FAILED, UNKNOWN_RESERVATION) → REJECTED; ``message`` dropped."""
    out = prune(data, COMMAND_RESULT_221, "", report, V221)
    result = out.get("result")
    if result is not None and result not in RESULT_TYPES_211:
        out["result"] = "REJECTED"
        report.add("result", MAPPED, f"{result} -> REJECTED: no 2.1.1 CommandResponseType")
    if "message" in out:
        del out["message"]
        report.add("message", DROPPED, "a 2.1.1 CommandResponse has no message")
    return out


step(COMMAND_RESULT, V221, V230)(_copy_up)
step(COMMAND_RESULT, V230, V221)(_pruned(COMMAND_RESULT_221, V230))
