"""What the compare screen says about a turn: agreement, cross-KL, and why a figure is missing."""

from __future__ import annotations

from typing import Any


def first_difference(a: str, b: str, width: int = 24) -> tuple[str, str]:
    """The two answers from where their text first differs (short snippets for the findings)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    start = a.rfind(" ", 0, n) + 1

    def snip(text: str) -> str:
        if n >= len(text):
            return "(end)"
        out = text[start : start + width].replace("\n", " ")
        return out + ("…" if len(text) > start + width else "")

    return snip(a), snip(b)


def swap_sides(result: dict[str, Any]) -> dict[str, Any]:
    """The same turn with A and B exchanged (a blind screen names Left first, whichever side it is)."""
    agreement = result["agreement"]
    if agreement is not None:
        agreement = {**agreement, "token_a": agreement["token_b"], "token_b": agreement["token_a"],
                     "len_a": agreement["len_b"], "len_b": agreement["len_a"]}
    return {**result, "a": result["b"], "b": result["a"], "agreement": agreement,
            "kl_a_under_b": result["kl_b_under_a"], "kl_b_under_a": result["kl_a_under_b"]}


def _missing(result: dict[str, Any]) -> str:
    reasons = {(result[s]["finished"] or {}).get("reason") for s in ("a", "b")}
    if "cancelled" in reasons:
        return "Stopped before the end: no agreement or KL figures, they need both whole answers."
    if "error" in reasons:
        return "No agreement or KL figures: a side failed."
    return "No agreement figures: one side did not answer."


def describe_turn(result: dict[str, Any], names: tuple[str, str]) -> str:
    """Agreement (shared token prefix, first differing token), then cross-KL on its own line.

    ``result``: a compare job's result (engine/tasks.py compare).
    """
    agreement = result["agreement"]
    if agreement is None:
        return _missing(result)
    x, y = names
    if agreement["identical"]:
        text = f"Identical answers ({agreement['len_a']} tokens)."
    else:
        sa, sb = first_difference(result["a"]["answer"], result["b"]["answer"])
        text = (
            f"Same first {agreement['common_prefix']} tokens (of {agreement['len_a']} / {agreement['len_b']}); "
            f"they part at token {agreement['common_prefix'] + 1}: {x} «{sa}» vs {y} «{sb}»."
        )
    kls = [
        f"KL({p}‖{q}) on {p}'s answer {kl['mean']:.4f} (p99 {kl['p99']:.4f})"
        for p, q, kl in ((x, y, result["kl_a_under_b"]), (y, x, result["kl_b_under_a"]))
        if kl is not None
    ]
    if kls:
        text += "\n" + " · ".join(kls)
    elif not result["related"]:
        text += "\nNo cross-KL: the models do not share a source."
    else:
        text += "\nNo cross-KL: an answer was empty."
    return text
