"""Next-speaker accuracy per member: does the model expect the right member to write next?

Each member's tag is scored after the history with `Cloneus.author_probabilities`, the call the bot uses to
pick who speaks, so the figure is about the served behaviour. The reference point is always guessing the
members with the most training messages, over the same turns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cloneus.evaluation.heldout import Conversation, Moment
from cloneus.evaluation.intervals import wilson_interval


def _tally(ranked_per_turn: list[list[str]], truths: list[str], members: Sequence[str]) -> dict[str, Any]:
    per = {m: [0, 0, 0] for m in members}  # top-1 hits, top-3 hits, turns
    for ranked, truth in zip(ranked_per_turn, truths, strict=True):
        row = per.setdefault(truth, [0, 0, 0])
        row[0] += ranked[0] == truth
        row[1] += truth in ranked[:3]
        row[2] += 1
    n = sum(r[2] for r in per.values())

    def rates(h1: int, h3: int, turns: int) -> dict[str, Any]:
        return {"top1": h1 / turns if turns else None, "top3": h3 / turns if turns else None, "turns": turns}

    top1_hits = sum(r[0] for r in per.values())
    overall = rates(top1_hits, sum(r[1] for r in per.values()), n)
    overall["top1_ci95"] = wilson_interval(top1_hits, n)
    return {**overall, "members": {m: rates(*per[m]) for m in members}}


def next_speaker(
    clone: Any,
    conversations: Sequence[Conversation],
    turns: Sequence[Moment],
    members: Sequence[str],
    on_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Top-1/top-3 over `turns`, overall and per true author, for whatever model `clone` runs right now."""
    ranked_per_turn = []
    for moment in turns:
        probs = clone.author_probabilities(conversations[moment.conversation][: moment.turn])
        ranked_per_turn.append(sorted(probs, key=probs.get, reverse=True))
        if on_step is not None:
            on_step()
    return _tally(ranked_per_turn, [m.author for m in turns], members)


def most_frequent_guess(turns: Sequence[Moment], members: Sequence[str]) -> dict[str, Any]:
    """Always guess `members` in their order (by training messages, most first), over the same turns."""
    ranked = list(members)
    result = _tally([ranked] * len(turns), [m.author for m in turns], members)
    return {"author": ranked[0] if ranked else None, **result}
