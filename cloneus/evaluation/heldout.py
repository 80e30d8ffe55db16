"""What the eval scores: held-out conversations, the next-speaker turns, and the moments replies are generated at.

All of it comes from the split training used (the latest `eval_frac` of sessions, rebuilt from the checkpoint's
config), so nothing scored here was trained on. Selections are deterministic, so finetuned and base are scored
on exactly the same turns and contexts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

Conversation = list[tuple[str, str]]
SEED = 0


@dataclass(frozen=True)
class Moment:
    """A held-out message: `conversations[conversation][turn]`, written by `author` after the turns before it."""

    conversation: int
    turn: int
    author: str


def cloneable_conversations(conversations: Sequence[Conversation], members: Sequence[str]) -> list[Conversation]:
    """Conversations where a member speaks after the first message (others have no turn to predict or reply to)."""
    wanted = set(members)
    return [list(c) for c in conversations if any(a in wanted for a, _ in c[1:])]


def member_moments(conversations: Sequence[Conversation], members: Sequence[str]) -> list[Moment]:
    """Every message by a member that has at least one message before it, in conversation order."""
    wanted = set(members)
    return [
        Moment(i, t, conv[t][0])
        for i, conv in enumerate(conversations)
        for t in range(1, len(conv))
        if conv[t][0] in wanted
    ]


def speaker_turns(conversations: Sequence[Conversation], members: Sequence[str], limit: int) -> list[Moment]:
    """The first `limit` member turns in conversation order: all of them when the split has fewer."""
    return member_moments(conversations, members)[:limit]


def reply_moments(conversations: Sequence[Conversation], members: Sequence[str], limit: int) -> list[Moment]:
    """Up to `limit` moments spread evenly over members (round robin over a seeded shuffle), in conversation order.

    Even spread: per-member figures need replies from every member, not only from the most talkative one.
    """
    by_member: dict[str, list[Moment]] = {m: [] for m in members}
    for moment in member_moments(conversations, members):
        by_member[moment.author].append(moment)
    rng = random.Random(SEED)
    queues = [rng.sample(ms, len(ms)) for ms in by_member.values() if ms]
    picked: list[Moment] = []
    while queues and len(picked) < limit:
        for queue in list(queues):
            if len(picked) >= limit:
                break
            picked.append(queue.pop())
            if not queue:
                queues.remove(queue)
    return sorted(picked, key=lambda m: (m.conversation, m.turn))
