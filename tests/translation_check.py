"""Round-trip checks of the version translators: what comes back equals what went in, except what a loss
report names (docs/versions.md, "Loss rules")."""

from __future__ import annotations

from typing import Any

from routing.ocpi.translate import Context, Loss, translate


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """JSON paths where ``b`` differs from ``a`` (a missing key, a changed value, a list of another length)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(sub)
            else:
                out.extend(differences(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [path]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return [] if abs(a - b) < 1e-9 else [path]
    return [] if a == b else [path]


def _covers(reported: str, diff: str) -> bool:
    """A loss at ``evses[0]`` explains a difference at ``evses[0].status``, and the other way round."""
    def parent_of(p: str, q: str) -> bool:
        return q == p or q.startswith(p + ".") or q.startswith(p + "[")
    return parent_of(reported, diff) or parent_of(diff, reported)


def unexplained(original: Any, back: Any, losses: list[Loss]) -> list[str]:
    return [d for d in differences(original, back) if not any(_covers(loss.path, d) for loss in losses)]


def round_trip(kind: str, obj: Any, *, source: str, via: str, ctx: Context | None = None,
               ctx_back: Context | None = None) -> tuple[Any, list[Loss]]:
    """``obj`` (OCPI ``source``) to ``via`` and back; returns what came back and every loss of both legs."""
    there = translate(kind, obj, source=source, target=via, ctx=ctx)
    back = translate(kind, there.data, source=via, target=source, ctx=ctx_back or ctx)
    return back.data, there.losses + back.losses


def assert_round_trip(kind: str, obj: Any, *, source: str, via: str, ctx: Context | None = None,
                      ctx_back: Context | None = None) -> list[Loss]:
    back, losses = round_trip(kind, obj, source=source, via=via, ctx=ctx, ctx_back=ctx_back)
    missing = unexplained(obj, back, losses)
    assert not missing, f"{kind} {source}>{via}>{source} changed {missing} without a loss report; losses: " + \
        ", ".join(f"{loss.path} ({loss.rule})" for loss in losses)
    return losses
