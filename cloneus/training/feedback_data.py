"""Preference examples from the bot's reactions, read straight from its SQLite file (read-only).

The bot stores, for every 👍/👎 on a clone reply, the context the reply answered with the reply itself as the last
entry (`feedback.context`), and for every reply the request that produced it (`replies.request`, with any seed
text). Regenerating a reply edits the same message, so one message can collect votes on several versions:

- every version whose votes sum above zero is a liked (desirable) example, below zero a disliked one;
- a message with both a liked and a disliked version gives preference pairs (each liked version against each
  disliked one), since both answered exactly the same context.

Consent is applied here, not trusted to have been applied upstream: votes by opted-out members are dropped, and so
is every example whose reply or context involves a member who opted out (the `consent` table, by Discord id) or
whom the checkpoint's user index marks opted out or excluded. The library only reads this database; the schema
belongs to `bot/store`.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.errors import CloneusError

if TYPE_CHECKING:
    from cloneus.data.users import UserIndex

logger = logging.getLogger(__name__)

REQUIRED_TABLES = ("feedback", "replies", "consent")

History = list[tuple[str, str]]


@dataclass(frozen=True)
class FeedbackExample:
    """One reacted-to version of a clone reply.

    Args:
        message_id (`int`): the Discord message the reply was posted as (shared by its regenerated versions).
        history (`list[tuple[str, str]]`): the `(author, text)` context the reply answered, oldest first.
        author (`str`): the cloned member who "wrote" the reply.
        text (`str`): the reply as posted (it starts with `seed_text` when there was one).
        seed_text (`str`, *optional*): words the requester made the reply start with; part of the prompt.
        liked (`bool`): the votes on this version sum above zero.
        votes (`int`): that sum.
    """

    message_id: int
    history: History
    author: str
    text: str
    seed_text: str | None
    liked: bool
    votes: int


@dataclass(frozen=True)
class FeedbackPair:
    """A liked and a disliked version of the same reply: same context, same author."""

    chosen: FeedbackExample
    rejected: FeedbackExample


@dataclass
class FeedbackSet:
    """What a database holds that may be trained on, and what was left out and why."""

    examples: list[FeedbackExample]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def pairs(self) -> list[FeedbackPair]:
        """Every liked × disliked version of one message."""
        by_message: dict[int, list[FeedbackExample]] = defaultdict(list)
        for ex in self.examples:
            by_message[ex.message_id].append(ex)
        pairs = []
        for versions in by_message.values():
            liked = [v for v in versions if v.liked]
            pairs += [FeedbackPair(c, r) for c in liked for r in versions if not r.liked]
        return pairs

    def split(self, holdout_frac: float, seed: int) -> tuple[FeedbackSet, FeedbackSet]:
        """Train and held-out sets, split by message so no version of a held-out reply is trained on."""
        ids = sorted({ex.message_id for ex in self.examples})
        random.Random(seed).shuffle(ids)
        n_held = round(len(ids) * holdout_frac) if holdout_frac > 0 else 0
        if holdout_frac > 0 and len(ids) > 1:
            n_held = min(max(n_held, 1), len(ids) - 1)
        held = set(ids[:n_held])
        train = [ex for ex in self.examples if ex.message_id not in held]
        return FeedbackSet(train, dict(self.skipped)), FeedbackSet(
            [ex for ex in self.examples if ex.message_id in held]
        )

    def counts(self) -> dict[str, int]:
        liked = sum(ex.liked for ex in self.examples)
        return {"liked": liked, "disliked": len(self.examples) - liked, "pairs": len(self.pairs)}


def _connect_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise CloneusError(f"{path}: no such bot database (the bot writes it at DB_PATH, default data/cloneus.db)")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        conn.close()
        raise CloneusError(f"{path}: not a CloneUs bot database (no {', '.join(missing)} table)")
    return conn


def _decode_context(raw: str, where: str) -> tuple[History, str, str]:
    """`[[author, text], ...]` → (history, reply author, reply text)."""
    try:
        context = json.loads(raw)
        turns = [(str(a), str(t)) for a, t in context]
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CloneusError(f"{where}: context is not a list of [author, text] pairs ({e})") from None
    if not turns:
        raise CloneusError(f"{where}: context is empty; it must end with the reply itself")
    *history, (author, text) = turns
    return history, author, text


def _blocked(name: str, users: UserIndex, opted_out_ids: set[str]) -> bool:
    user = users.get(name)
    return user is not None and (user.opted_out or user.excluded or user.id in opted_out_ids)


def read_feedback(db_path: str | Path, users: UserIndex) -> FeedbackSet:
    """The trainable feedback in the bot database at `db_path`.

    Args:
        db_path (`str | Path`): the bot's SQLite file (opened read-only).
        users (`UserIndex`): the index of the checkpoint being tuned; opted-out and excluded members in it are
            left out, as are Discord ids the bot's `consent` table lists as opted out.

    Raises:
        CloneusError: the file is missing, is not a bot database, or holds a malformed row (named by message id).
    """
    path = Path(db_path)
    conn = _connect_read_only(path)
    try:
        opted_out_ids = {str(r[0]) for r in conn.execute("SELECT user_id FROM consent WHERE opted_out = 1")}
        seeds = {}
        for r in conn.execute("SELECT message_id, request FROM replies"):
            seeds[r["message_id"]] = json.loads(r["request"]).get("seed_text")
        rows = list(conn.execute("SELECT message_id, user_id, value, context FROM feedback ORDER BY created_at"))
    finally:
        conn.close()

    skipped: dict[str, int] = defaultdict(int)
    votes: dict[tuple[int, str], int] = defaultdict(int)
    versions: dict[tuple[int, str], tuple[History, str]] = {}
    for r in rows:
        if str(r["user_id"]) in opted_out_ids:
            skipped["voter_opted_out"] += 1
            continue
        history, author, text = _decode_context(r["context"], f"{path}: feedback on message {r['message_id']}")
        if any(_blocked(name, users, opted_out_ids) for name in (author, *(a for a, _ in history))):
            skipped["member_opted_out_or_excluded"] += 1
            continue
        if users.get(author) is None:
            skipped["author_not_in_index"] += 1
            continue
        key = (r["message_id"], text)
        votes[key] += int(r["value"])
        versions[key] = (history, author)

    examples = []
    for (message_id, text), total in votes.items():
        if total == 0:
            skipped["tied_votes"] += 1
            continue
        history, author = versions[(message_id, text)]
        seed = seeds.get(message_id)
        examples.append(
            FeedbackExample(
                message_id=message_id,
                history=history,
                author=author,
                text=text,
                seed_text=seed if seed and text.startswith(seed) else None,
                liked=total > 0,
                votes=total,
            )
        )
    logger.info("%s: %d feedback examples (%s skipped)", path, len(examples), dict(skipped) or "none")
    return FeedbackSet(examples, dict(skipped))
