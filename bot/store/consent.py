"""Consent (opt-outs, auto-reply opt-ins) and the erasure of a member's data, which spans every table about them."""

from __future__ import annotations

from collections.abc import Iterable

import aiosqlite

from bot.store.base import StoreBase, now_iso


class ConsentTables(StoreBase):
    """The `consent` and `autoreply_optin` tables, and the one method that deletes a user's data."""

    async def set_opt_out(self, user_id: int, opted_out: bool, names: Iterable[str] = ()) -> None:
        """Record a member's choice. Opting out also erases, in the same transaction, what `delete_user_data`
        erases (pass the member's `names` to include clone replies posted as them).
        """
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO consent (user_id, opted_out, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(user_id) DO UPDATE SET opted_out = excluded.opted_out, updated_at = excluded.updated_at",
                (user_id, int(opted_out), now_iso()),
            )
            if opted_out:
                await _delete_user_rows(db, user_id, names)

    async def opted_out_ids(self) -> set[int]:
        rows = await self._fetchall("SELECT user_id FROM consent WHERE opted_out = 1")
        return {r["user_id"] for r in rows}

    async def set_autoreply_optin(self, guild_id: int, user_id: int, opted_in: bool) -> None:
        """A member asks clones to answer their messages (`trigger: opted-in` auto-reply), or stops asking."""
        async with self._tx() as db:
            if opted_in:
                await db.execute(
                    "INSERT OR REPLACE INTO autoreply_optin (guild_id, user_id, updated_at) VALUES (?, ?, ?)",
                    (guild_id, user_id, now_iso()),
                )
            else:
                await db.execute("DELETE FROM autoreply_optin WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))

    async def autoreply_optins(self, guild_id: int) -> set[int]:
        rows = await self._fetchall("SELECT user_id FROM autoreply_optin WHERE guild_id = ?", (guild_id,))
        return {r["user_id"] for r in rows}

    async def delete_user_data(self, user_id: int, names: Iterable[str] = ()) -> None:
        """Erase what the store holds about a user: their context messages (by id, or by any of `names`, which
        also catches clone replies posted as them), their base-model chat, their feedback, the requests they
        invoked and their auto-reply opt-in.
        The consent row itself stays, since it is what keeps them opted out.
        """
        async with self._tx() as db:
            await _delete_user_rows(db, user_id, names)


async def _delete_user_rows(db: aiosqlite.Connection, user_id: int, names: Iterable[str]) -> None:
    await db.execute("DELETE FROM context WHERE author_id = ?", (user_id,))
    await db.execute("DELETE FROM base_context WHERE author_id = ?", (user_id,))
    await db.execute("DELETE FROM autoreply_optin WHERE user_id = ?", (user_id,))
    for name in names:
        await db.execute("DELETE FROM context WHERE author = ?", (name,))
        await db.execute("DELETE FROM replies WHERE author = ?", (name,))
    await db.execute("DELETE FROM feedback WHERE user_id = ?", (user_id,))
    await db.execute("DELETE FROM game_votes WHERE user_id = ?", (user_id,))
    # Rounds that quoted or imitated them go too (their real messages are never used again: the game skips them).
    await db.execute(
        "DELETE FROM game_votes WHERE round_id IN (SELECT id FROM game_rounds WHERE author_id = ?)", (user_id,)
    )
    await db.execute("DELETE FROM game_rounds WHERE author_id = ?", (user_id,))
    await db.execute("DELETE FROM replies WHERE invoker_id = ?", (user_id,))
