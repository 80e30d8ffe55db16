"""Per-channel context: recent messages (clone replies stored under the cloned author), and the base model's chat.

The two never mix: `context` is what the clones see, `base_context` is the short user/assistant chat of
`/clone ask`. A clear hides a channel's rows (`cleared_at`) instead of deleting them, so `restore_context` can undo
the last clear; the next clear with something to hide deletes the rows hidden before (one level of undo).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from bot.store.base import StoreBase, iso, now_iso, parse_dt

BASE_CONTEXT_KEEP_PER_CHANNEL = 200  # the base chat reads only its last few turns; the rest is for restore
CONTEXT_TABLES = ("context", "base_context")


@dataclass(frozen=True)
class BaseMessage:
    """One turn of the base model's chat: `role` is `user` or `assistant`."""

    role: str
    text: str
    author_id: int | None = None


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
                " SELECT id FROM context WHERE channel_id = ? AND cleared_at IS NULL"
                " ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?)",
                (channel_id, channel_id, self.context_keep),
            )

    async def recent_context(self, channel_id: int, limit: int) -> list[ContextMessage]:
        """The last `limit` messages of the channel by time (ties in arrival order), oldest first."""
        rows = await self._fetchall(
            "SELECT * FROM (SELECT * FROM context WHERE channel_id = ? AND cleared_at IS NULL"
            " ORDER BY created_at DESC, id DESC LIMIT ?)"
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

    async def clear_context(self, channel_id: int) -> int:
        """Hide the channel's clone context (undone by `restore_context`); returns how many messages it hid."""
        async with self._tx() as db:
            return await _soft_clear(db, "context", channel_id)

    async def restore_context(self, channel_id: int) -> dict[str, int]:
        """Undo the last clear of each context of the channel; returns how many rows came back per table."""
        restored = {}
        async with self._tx() as db:
            for table in CONTEXT_TABLES:
                cur = await db.execute(
                    f"UPDATE {table} SET cleared_at = NULL WHERE channel_id = ? AND cleared_at IS NOT NULL",
                    (channel_id,),
                )
                restored[table] = cur.rowcount
        return restored

    # -- the base model's chat -----------------------------------------------------------------------------------

    async def add_base_message(self, channel_id: int, role: str, text: str, author_id: int | None = None) -> None:
        """Append one turn (`user` or `assistant`) to the channel's base-model chat."""
        if role not in ("user", "assistant"):
            raise ValueError(f"role must be 'user' or 'assistant', got {role!r}")
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO base_context (channel_id, role, text, author_id, created_at) VALUES (?, ?, ?, ?, ?)",
                (channel_id, role, text, author_id, now_iso()),
            )
            await db.execute(
                "DELETE FROM base_context WHERE channel_id = ? AND id IN (SELECT id FROM base_context"
                " WHERE channel_id = ? AND cleared_at IS NULL ORDER BY id DESC LIMIT -1 OFFSET ?)",
                (channel_id, channel_id, BASE_CONTEXT_KEEP_PER_CHANNEL),
            )

    async def recent_base_messages(self, channel_id: int, limit: int) -> list[BaseMessage]:
        """The last `limit` turns of the channel's base-model chat, oldest first."""
        rows = await self._fetchall(
            "SELECT * FROM (SELECT * FROM base_context WHERE channel_id = ? AND cleared_at IS NULL"
            " ORDER BY id DESC LIMIT ?) ORDER BY id",
            (channel_id, limit),
        )
        return [BaseMessage(role=r["role"], text=r["text"], author_id=r["author_id"]) for r in rows]

    async def clear_base_context(self, channel_id: int) -> int:
        """Hide the channel's base-model chat (undone by `restore_context`); returns how many turns it hid."""
        async with self._tx() as db:
            return await _soft_clear(db, "base_context", channel_id)


async def _soft_clear(db: aiosqlite.Connection, table: str, channel_id: int) -> int:
    """Hide a channel's live rows of `table`. Rows hidden by an earlier clear are deleted first, unless there is
    nothing live to hide (so clearing twice does not throw away what the first clear could restore)."""
    async with db.execute(
        f"SELECT COUNT(*) FROM {table} WHERE channel_id = ? AND cleared_at IS NULL", (channel_id,)
    ) as cur:
        (live,) = await cur.fetchone()
    if live:
        await db.execute(f"DELETE FROM {table} WHERE channel_id = ? AND cleared_at IS NOT NULL", (channel_id,))
        await db.execute(
            f"UPDATE {table} SET cleared_at = ? WHERE channel_id = ? AND cleared_at IS NULL", (now_iso(), channel_id)
        )
    return live
