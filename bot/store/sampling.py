"""Sampling profiles (named option sets per guild) and word rules (banned and weighted words per channel)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.store.base import StoreBase, now_iso


@dataclass(frozen=True)
class WordRule:
    """A channel's rule for one word or phrase: banned when `bias` is None, else weighted by `bias`."""

    word: str
    bias: float | None


class SamplingTables(StoreBase):
    """The `sampling_profiles` and `word_rules` tables."""

    async def save_profile(self, guild_id: int, name: str, options: dict[str, Any], author_id: int | None) -> bool:
        """Store (or replace) the guild's profile `name`; returns whether one by that name existed."""
        async with self._tx() as db:
            async with db.execute(
                "SELECT 1 FROM sampling_profiles WHERE guild_id = ? AND name = ?", (guild_id, name)
            ) as cur:
                existed = await cur.fetchone() is not None
            await db.execute(
                "INSERT INTO sampling_profiles (guild_id, name, options, author_id, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(guild_id, name) DO UPDATE SET options = excluded.options,"
                " author_id = excluded.author_id, updated_at = excluded.updated_at",
                (guild_id, name, json.dumps(options), author_id, now_iso()),
            )
        return existed

    async def get_profile(self, guild_id: int, name: str) -> dict[str, Any] | None:
        rows = await self._fetchall(
            "SELECT options FROM sampling_profiles WHERE guild_id = ? AND name = ?", (guild_id, name)
        )
        return json.loads(rows[0]["options"]) if rows else None

    async def list_profiles(self, guild_id: int) -> dict[str, dict[str, Any]]:
        """The guild's profiles by name, sorted by name."""
        rows = await self._fetchall(
            "SELECT name, options FROM sampling_profiles WHERE guild_id = ? ORDER BY name", (guild_id,)
        )
        return {r["name"]: json.loads(r["options"]) for r in rows}

    async def set_word_rules(self, channel_id: int, banned: list[str], weighted: Mapping[str, float]) -> None:
        """Add rules to the channel (a word already ruled gets the new rule); one transaction for all of them."""
        now = now_iso()
        rows = [(channel_id, w, None, now) for w in banned] + [(channel_id, w, b, now) for w, b in weighted.items()]
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO word_rules (channel_id, word, bias, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(channel_id, word) DO UPDATE SET bias = excluded.bias, updated_at = excluded.updated_at",
                rows,
            )

    async def word_rules(self, channel_id: int) -> list[WordRule]:
        rows = await self._fetchall(
            "SELECT word, bias FROM word_rules WHERE channel_id = ? ORDER BY word", (channel_id,)
        )
        return [WordRule(word=r["word"], bias=r["bias"]) for r in rows]

    async def clear_word_rules(self, channel_id: int) -> int:
        async with self._tx() as db:
            cur = await db.execute("DELETE FROM word_rules WHERE channel_id = ?", (channel_id,))
            return cur.rowcount
