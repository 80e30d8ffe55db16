"""Per-channel settings (sampling defaults, auto-reply, webhook), one JSON value per key."""

from __future__ import annotations

import json
from typing import Any

from bot.store.base import StoreBase


class SettingsTables(StoreBase):
    """The `channel_settings` table."""

    async def get_channel_settings(self, channel_id: int) -> dict[str, Any]:
        """Every setting stored for the channel (values are JSON-decoded)."""
        rows = await self._fetchall("SELECT key, value FROM channel_settings WHERE channel_id = ?", (channel_id,))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def set_channel_setting(self, channel_id: int, key: str, value: Any) -> None:
        """Store one JSON-serialisable value; `None` removes the key."""
        async with self._tx() as db:
            if value is None:
                await db.execute("DELETE FROM channel_settings WHERE channel_id = ? AND key = ?", (channel_id, key))
            else:
                await db.execute(
                    "INSERT INTO channel_settings (channel_id, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT(channel_id, key) DO UPDATE SET value = excluded.value",
                    (channel_id, key, json.dumps(value)),
                )

    async def reset_channel_settings(self, channel_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM channel_settings WHERE channel_id = ?", (channel_id,))
