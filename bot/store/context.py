"""Per-channel context: recent messages, with clone replies stored under the cloned author."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.store.base import StoreBase, iso, parse_dt


@dataclass(frozen=True)
class ContextMessage:
    """One message of a channel's context. Clone replies carry the cloned author and `is_clone=True`."""

    channel_id: int
    message_id: int | None
    author: str
    text: str
    created_at: datetime
    is_clone: bool = False
    author_id: int | None = None


class ContextTables(StoreBase):
    """The `context` table. `context_keep` (rows kept per channel) is set by the `Store` facade."""

    context_keep: int

    async def add_context(
        self,
        channel_id: int,
        message_id: int | None,
        author: str,
        text: str,
        created_at: datetime | str,
        is_clone: bool = False,
        *,
        author_id: int | None = None,
    ) -> None:
        """Append a message to the channel's context (a message id already stored is updated, not duplicated)."""
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO context (channel_id, message_id, author, author_id, text, created_at, is_clone)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(channel_id, message_id) DO UPDATE SET author=excluded.author, text=excluded.text,"
                " is_clone=excluded.is_clone",
                (channel_id, message_id, author, author_id, text, iso(created_at), int(is_clone)),
            )
            await db.execute(
                "DELETE FROM context WHERE channel_id = ? AND id IN ("
                " SELECT id FROM context WHERE channel_id = ? ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?)",
                (channel_id, channel_id, self.context_keep),
            )

    async def recent_context(self, channel_id: int, limit: int) -> list[ContextMessage]:
        """The last `limit` messages of the channel by time (ties in arrival order), oldest first."""
        rows = await self._fetchall(
            "SELECT * FROM (SELECT * FROM context WHERE channel_id = ? ORDER BY created_at DESC, id DESC LIMIT ?)"
            " ORDER BY created_at, id",
            (channel_id, limit),
        )
        return [
            ContextMessage(
                channel_id=r["channel_id"],
                message_id=r["message_id"],
                author=r["author"],
                text=r["text"],
                created_at=parse_dt(r["created_at"]),
                is_clone=bool(r["is_clone"]),
                author_id=r["author_id"],
            )
            for r in rows
        ]

    async def update_context_text(self, channel_id: int, message_id: int, text: str) -> None:
        """Replace the text of a stored message (an edit, or a regenerated clone reply)."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE context SET text = ? WHERE channel_id = ? AND message_id = ?", (text, channel_id, message_id)
            )

    async def delete_context_message(self, channel_id: int, message_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM context WHERE channel_id = ? AND message_id = ?", (channel_id, message_id))

    async def clear_context(self, channel_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM context WHERE channel_id = ?", (channel_id,))
