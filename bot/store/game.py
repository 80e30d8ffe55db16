"""The "Real or clone?" game: games, their rounds (what was shown, whether it was real, which model wrote it) and
the players' votes. `bot/game.py` runs the game and computes the statistics from these rows.

A real message is used at most once per guild, whether it was shown or answered by a clone: a unique index on
`(guild_id, source_message_id)` holds that even if two games start at once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.store.base import StoreBase, now_iso
from cloneus.errors import CloneusError


@dataclass(frozen=True)
class GameRound:
    """One round: `text` shown under `author`'s name (hidden in attribution rounds), real or written by `model`."""

    id: int
    game_id: int
    guild_id: int
    number: int
    source_message_id: int
    author: str
    author_id: int | None
    text: str
    is_real: bool
    model: str | None
    attribution: bool
    message_id: int | None
    revealed: bool


@dataclass(frozen=True)
class GameVote:
    round_id: int
    user_id: int
    guess_real: bool | None
    guess_author: str | None


def _round(r) -> GameRound:
    return GameRound(
        id=r["id"],
        game_id=r["game_id"],
        guild_id=r["guild_id"],
        number=r["number"],
        source_message_id=r["source_message_id"],
        author=r["author"],
        author_id=r["author_id"],
        text=r["text"],
        is_real=bool(r["is_real"]),
        model=r["model"],
        attribution=bool(r["attribution"]),
        message_id=r["message_id"],
        revealed=r["revealed_at"] is not None,
    )


def _vote(r) -> GameVote:
    guess = r["guess_real"]
    return GameVote(r["round_id"], r["user_id"], None if guess is None else bool(guess), r["guess_author"])


class GameTables(StoreBase):
    """The `games`, `game_rounds` and `game_votes` tables."""

    async def create_game(self, guild_id: int, channel_id: int, host_id: int, rounds: int) -> int:
        async with self._tx() as db:
            cur = await db.execute(
                "INSERT INTO games (guild_id, channel_id, host_id, rounds, created_at) VALUES (?, ?, ?, ?, ?)",
                (guild_id, channel_id, host_id, rounds, now_iso()),
            )
            return cur.lastrowid

    async def finish_game(self, game_id: int) -> None:
        async with self._tx() as db:
            await db.execute("UPDATE games SET finished_at = ? WHERE id = ?", (now_iso(), game_id))

    async def used_game_sources(self, guild_id: int) -> set[int]:
        """Ids of the real messages this guild's games have already used."""
        rows = await self._fetchall("SELECT source_message_id FROM game_rounds WHERE guild_id = ?", (guild_id,))
        return {r["source_message_id"] for r in rows}

    async def add_round(
        self,
        game_id: int,
        guild_id: int,
        number: int,
        source_message_id: int,
        author: str,
        author_id: int | None,
        text: str,
        *,
        is_real: bool,
        model: str | None,
        attribution: bool,
    ) -> GameRound:
        """Store a round before it is posted.

        Raises:
            CloneusError: the source message was already used in this guild.
        """
        try:
            async with self._tx() as db:
                cur = await db.execute(
                    "INSERT INTO game_rounds (game_id, guild_id, number, source_message_id, author, author_id, text,"
                    " is_real, model, attribution, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        game_id,
                        guild_id,
                        number,
                        source_message_id,
                        author,
                        author_id,
                        text,
                        int(is_real),
                        model,
                        int(attribution),
                        now_iso(),
                    ),  # fmt: skip
                )
                round_id = cur.lastrowid
        except sqlite3.IntegrityError:
            raise CloneusError(f"message {source_message_id} was already used in a game") from None
        return await self.get_round(round_id)

    async def set_round_message(self, round_id: int, message_id: int) -> None:
        async with self._tx() as db:
            await db.execute("UPDATE game_rounds SET message_id = ? WHERE id = ?", (message_id, round_id))

    async def get_round(self, round_id: int) -> GameRound | None:
        rows = await self._fetchall("SELECT * FROM game_rounds WHERE id = ?", (round_id,))
        return _round(rows[0]) if rows else None

    async def vote(
        self, round_id: int, user_id: int, *, guess_real: bool | None = None, guess_author: str | None = None
    ) -> None:
        """Record a player's guess; a later guess replaces that part of their vote and keeps the other part."""
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO game_votes (round_id, user_id, guess_real, guess_author, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(round_id, user_id) DO UPDATE SET"
                " guess_real = COALESCE(excluded.guess_real, guess_real),"
                " guess_author = COALESCE(excluded.guess_author, guess_author)",
                (round_id, user_id, None if guess_real is None else int(guess_real), guess_author, now_iso()),
            )

    async def round_votes(self, round_id: int) -> list[GameVote]:
        rows = await self._fetchall("SELECT * FROM game_votes WHERE round_id = ? ORDER BY created_at", (round_id,))
        return [_vote(r) for r in rows]

    async def game_players(self, game_id: int) -> set[int]:
        """Everyone who has voted in any round of the game."""
        rows = await self._fetchall(
            "SELECT DISTINCT v.user_id FROM game_votes v JOIN game_rounds r ON r.id = v.round_id WHERE r.game_id = ?",
            (game_id,),
        )
        return {r["user_id"] for r in rows}

    async def reveal_round(self, round_id: int) -> bool:
        """Mark the round revealed; True only for the call that did it (a timeout and a last vote can race)."""
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE game_rounds SET revealed_at = ? WHERE id = ? AND revealed_at IS NULL", (now_iso(), round_id)
            )
            return cur.rowcount == 1

    async def revealed_rounds(self, guild_id: int) -> list[tuple[GameRound, list[GameVote]]]:
        """Every revealed round of the guild with its votes, oldest first (what `/clone game stats` counts)."""
        rounds = await self._fetchall(
            "SELECT * FROM game_rounds WHERE guild_id = ? AND revealed_at IS NOT NULL ORDER BY id", (guild_id,)
        )
        votes = await self._fetchall(
            "SELECT v.* FROM game_votes v JOIN game_rounds r ON r.id = v.round_id"
            " WHERE r.guild_id = ? AND r.revealed_at IS NOT NULL",
            (guild_id,),
        )
        by_round: dict[int, list[GameVote]] = {}
        for v in votes:
            by_round.setdefault(v["round_id"], []).append(_vote(v))
        return [(_round(r), by_round.get(r["id"], [])) for r in rounds]

    async def game_rounds_with_votes(self, game_id: int) -> list[tuple[GameRound, list[GameVote]]]:
        """The revealed rounds of one game with their votes (its scoreboard)."""
        rows = await self._fetchall(
            "SELECT * FROM game_rounds WHERE game_id = ? AND revealed_at IS NOT NULL ORDER BY id", (game_id,)
        )
        return [(_round(r), await self.round_votes(r["id"])) for r in rows]

    async def model_game_votes(self, model: str) -> list[tuple[GameRound, list[GameVote]]]:
        """Revealed rounds played with `model` (its clone replies and the real messages beside them), in every
        guild, with their votes (for `/model status`)."""
        rounds = await self._fetchall(
            "SELECT * FROM game_rounds WHERE model = ? AND revealed_at IS NOT NULL ORDER BY id", (model,)
        )
        out = []
        for r in rounds:
            out.append((_round(r), await self.round_votes(r["id"])))
        return out
