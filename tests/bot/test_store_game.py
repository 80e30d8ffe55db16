"""The store's feedback-per-version and "Real or clone?" tables, and the migration that brings old feedback along."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bot.store import MIGRATIONS, Store
from bot.store.migrations import statements
from cloneus.errors import CloneusError


@pytest.fixture
async def store(tmp_path):
    async with await Store.open(tmp_path / "bot.db") as s:
        yield s


class TestFeedbackVersions:
    async def test_a_vote_per_version_is_kept_and_a_revote_on_one_version_replaces(self, store):
        history = [["bob", "hi"]]
        await store.add_feedback(7, 1, 1, [*history, ["alice", "first take"]])
        await store.add_feedback(7, 1, -1, [*history, ["alice", "second take"]])
        await store.add_feedback(7, 1, -1, [*history, ["alice", "first take"]])
        rows = sorted((r["reply_text"], r["value"]) for r in await store.list_feedback(7))
        assert rows == [("first take", -1), ("second take", -1)]

    async def test_a_context_without_the_reply_is_refused(self, store):
        with pytest.raises(ValueError, match="must end with"):
            await store.add_feedback(7, 1, 1, [])

    async def test_version_2_feedback_is_migrated_with_its_reply_text(self, tmp_path):
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            for script in MIGRATIONS[:2]:
                for statement in statements(script):
                    conn.execute(statement)
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (2)")
            context = json.dumps([["bob", "hi"], ["alice", "old reply"]])
            conn.execute("INSERT INTO feedback VALUES (7, 1, 1, ?, '2026-01-01T00:00:00.000000+00:00')", (context,))
        async with await Store.open(path) as s:
            assert await s.schema_version() == len(MIGRATIONS)
            [row] = await s.list_feedback(7)
            assert row["reply_text"] == "old reply" and row["value"] == 1


class TestGameTables:
    async def _round(self, store, game, source, **kw):
        return await store.add_round(
            game, 100, 1, source, "alice", 11, "text", is_real=kw.get("real", True), model="m", attribution=False
        )

    async def test_a_real_message_is_used_once_per_guild(self, store):
        game = await store.create_game(100, 1, 11, 3)
        await self._round(store, game, 555)
        assert await store.used_game_sources(100) == {555}
        with pytest.raises(CloneusError, match="already used"):
            await self._round(store, game, 555)

    async def test_votes_merge_guesses_and_reveal_happens_once(self, store):
        game = await store.create_game(100, 1, 11, 3)
        rnd = await self._round(store, game, 1)
        await store.vote(rnd.id, 12, guess_real=False)
        await store.vote(rnd.id, 12, guess_author="alice")
        [vote] = await store.round_votes(rnd.id)
        assert (vote.guess_real, vote.guess_author) == (False, "alice")
        assert await store.game_players(game) == {12}
        assert await store.revealed_rounds(100) == []
        assert await store.reveal_round(rnd.id) is True
        assert await store.reveal_round(rnd.id) is False
        [(shown, votes)] = await store.revealed_rounds(100)
        assert shown.revealed and votes == [vote]

    async def test_opting_out_erases_a_members_rounds_and_votes(self, store):
        game = await store.create_game(100, 1, 11, 3)
        rnd = await self._round(store, game, 1)
        other = await store.add_round(game, 100, 2, 2, "bob", 12, "t", is_real=False, model="m", attribution=False)
        await store.vote(other.id, 11, guess_real=True)
        await store.vote(rnd.id, 12, guess_real=True)
        await store.set_opt_out(11, True)
        assert await store.get_round(rnd.id) is None
        assert await store.round_votes(other.id) == []
