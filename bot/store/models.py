"""Measured load times per checkpoint, so "ready in about N s" is that checkpoint's last load, not a guess."""

from __future__ import annotations

from bot.store.base import StoreBase, now_iso


class ModelTables(StoreBase):
    """The `load_times` table, keyed by the checkpoint path as registered."""

    async def record_load_time(self, checkpoint: str, seconds: float) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO load_times (checkpoint, seconds, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(checkpoint) DO UPDATE SET seconds = excluded.seconds, updated_at = excluded.updated_at",
                (checkpoint, seconds, now_iso()),
            )

    async def load_time(self, checkpoint: str) -> float | None:
        """The seconds the last load of `checkpoint` took, or None when it was never loaded here."""
        rows = await self._fetchall("SELECT seconds FROM load_times WHERE checkpoint = ?", (checkpoint,))
        return rows[0]["seconds"] if rows else None
