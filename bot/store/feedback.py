"""Clone replies (the request behind each, for regenerate) and the 👍/👎 feedback on them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.store.base import StoreBase, now_iso, parse_dt


@dataclass(frozen=True)
class CloneReply:
    """A message the bot posted as a clone, with the request that produced it (for regenerate and feedback)."""

    message_id: int
    channel_id: int
    author: str
    invoker_id: int
    request: dict[str, Any]
    created_at: datetime


class FeedbackTables(StoreBase):
    """The `replies` and `feedback` tables."""

    async def record_reply(
        self, message_id: int, channel_id: int, author: str, invoker_id: int, request: dict[str, Any]
    ) -> None:
        """Remember a clone reply and the request (history, author, seed, sampling) that produced it."""
        async with self._tx() as db:
            await db.execute(
                "INSERT OR REPLACE INTO replies (message_id, channel_id, author, invoker_id, request, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, channel_id, author, invoker_id, json.dumps(request), now_iso()),
            )

    async def get_reply(self, message_id: int) -> CloneReply | None:
        rows = await self._fetchall("SELECT * FROM replies WHERE message_id = ?", (message_id,))
        if not rows:
            return None
        r = rows[0]
        return CloneReply(
            message_id=r["message_id"],
            channel_id=r["channel_id"],
            author=r["author"],
            invoker_id=r["invoker_id"],
            request=json.loads(r["request"]),
            created_at=parse_dt(r["created_at"]),
        )

    async def delete_reply(self, message_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM replies WHERE message_id = ?", (message_id,))

    async def add_feedback(self, message_id: int, user_id: int, value: int, context: list) -> None:
        """Record 👍 (+1) / 👎 (-1) on a clone reply with the context it answered, the reply itself last.

        Votes are kept per version of the reply (its text): a user's later vote on the same version replaces their
        earlier one, and a vote on a regenerated version is kept beside it, which makes a preference pair for
        `cloneus train --feedback`.
        """
        if value not in (-1, 1):
            raise ValueError(f"feedback value must be +1 or -1, got {value!r}")
        if not context or len(context[-1]) != 2:
            raise ValueError("feedback context must end with the [author, text] of the reply voted on")
        async with self._tx() as db:
            await db.execute(
                "INSERT OR REPLACE INTO feedback (message_id, user_id, reply_text, value, context, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, user_id, str(context[-1][1]), value, json.dumps(context), now_iso()),
            )

    async def list_feedback(self, message_id: int | None = None) -> list[dict[str, Any]]:
        """Feedback rows (all, or for one reply), as dicts with the context decoded."""
        sql, params = "SELECT * FROM feedback", ()
        if message_id is not None:
            sql, params = sql + " WHERE message_id = ?", (message_id,)
        rows = await self._fetchall(sql, params)
        return [{**dict(r), "context": json.loads(r["context"])} for r in rows]
