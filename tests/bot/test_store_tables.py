"""The store's tables for the bot's group features: undoable clears, the base model's chat, auto-reply opt-ins,
sampling profiles, word rules, load times, and the migration that adds them to an existing database."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from bot.store import MIGRATIONS, Store, WordRule
from bot.store.migrations import statements

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def store(tmp_path):
    async with await Store.open(tmp_path / "bot.db") as s:
        yield s


class TestMigration:
    async def test_a_version_1_database_gains_the_new_tables_and_keeps_its_context(self, tmp_path):
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            for statement in statements(MIGRATIONS[0]):
                conn.execute(statement)
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (1)")
            conn.execute(
                "INSERT INTO context (channel_id, message_id, author, text, created_at) VALUES (1, 5, 'a', 'old', ?)",
                (T0.isoformat(),),
            )
        async with await Store.open(path) as s:
            assert await s.schema_version() == len(MIGRATIONS)
            assert [m.text for m in await s.recent_context(1, 10)] == ["old"]
            await s.record_load_time("ck", 2.5)
            assert await s.load_time("ck") == 2.5


class TestClearAndRestore:
    async def test_restore_brings_back_the_last_clear_in_time_order(self, store):
        await store.add_context(1, 1, "a", "one", T0)
        await store.add_context(1, 2, "b", "two", T0 + timedelta(seconds=1))
        await store.add_context(2, 3, "c", "other channel", T0)
        assert await store.clear_context(1) == 2
        assert await store.recent_context(1, 10) == []
        await store.add_context(1, 4, "a", "after", T0 + timedelta(seconds=5))
        assert (await store.restore_context(1))["context"] == 2
        assert [m.text for m in await store.recent_context(1, 10)] == ["one", "two", "after"]
        assert [m.text for m in await store.recent_context(2, 10)] == ["other channel"]

    async def test_only_the_last_clear_is_undone_and_an_empty_clear_keeps_it(self, store):
        await store.add_context(1, 1, "a", "first", T0)
        await store.clear_context(1)
        await store.add_context(1, 2, "a", "second", T0)
        await store.clear_context(1)
        assert await store.clear_context(1) == 0  # nothing live: the undo of "second" survives
        await store.restore_context(1)
        assert [m.text for m in await store.recent_context(1, 10)] == ["second"]
        assert await store.restore_context(1) == {"context": 0, "base_context": 0}

    async def test_reseeding_a_cleared_message_keeps_it_cleared(self, store):
        await store.add_context(1, 1, "a", "old", T0)
        await store.clear_context(1)
        await store.add_context(1, 1, "a", "old", T0)  # the start-up history seed sees it again
        assert await store.recent_context(1, 10) == []


class TestBaseContext:
    async def test_base_chat_is_separate_ordered_and_clearable(self, store):
        await store.add_context(1, 1, "alice", "clone context", T0)
        await store.add_base_message(1, "user", "hi", author_id=7)
        await store.add_base_message(1, "assistant", "hello", author_id=7)
        await store.add_base_message(1, "user", "how are you", author_id=8)
        assert [(m.role, m.text) for m in await store.recent_base_messages(1, 2)] == [
            ("assistant", "hello"),
            ("user", "how are you"),
        ]
        assert [m.text for m in await store.recent_context(1, 10)] == ["clone context"]
        assert await store.clear_base_context(1) == 3
        assert await store.recent_base_messages(1, 10) == []
        assert [m.text for m in await store.recent_context(1, 10)] == ["clone context"]
        assert (await store.restore_context(1))["base_context"] == 3
        assert len(await store.recent_base_messages(1, 10)) == 3

    async def test_a_bad_role_is_refused(self, store):
        with pytest.raises(ValueError, match="'user' or 'assistant'"):
            await store.add_base_message(1, "system", "x")


class TestAutoreplyOptIn:
    async def test_opt_in_out_per_guild_and_erased_with_the_member(self, store):
        await store.set_autoreply_optin(1, 42, True)
        await store.set_autoreply_optin(1, 43, True)
        await store.set_autoreply_optin(2, 42, True)
        await store.set_autoreply_optin(1, 43, False)
        assert await store.autoreply_optins(1) == {42}
        await store.add_base_message(1, "user", "mine", author_id=42)
        await store.set_opt_out(42, True)
        assert await store.autoreply_optins(1) == set() and await store.autoreply_optins(2) == set()
        assert await store.recent_base_messages(1, 10) == []


class TestProfiles:
    async def test_save_replace_list_per_guild(self, store):
        assert await store.save_profile(1, "calm", {"temperature": 0.5}, 7) is False
        assert await store.save_profile(1, "calm", {"temperature": 0.6}, 7) is True
        await store.save_profile(1, "wild", {"temperature": 1.5}, 7)
        await store.save_profile(2, "other", {}, 8)
        assert await store.get_profile(1, "calm") == {"temperature": 0.6}
        assert await store.get_profile(2, "calm") is None
        assert list(await store.list_profiles(1)) == ["calm", "wild"]


class TestWordRules:
    async def test_ban_boost_replace_and_clear(self, store):
        await store.set_word_rules(1, ["darn"], {"pizza": 2.0})
        await store.set_word_rules(1, ["pizza"], {"yes": -1.0})  # pizza goes from weighted to banned
        assert await store.word_rules(1) == [WordRule("darn", None), WordRule("pizza", None), WordRule("yes", -1.0)]
        assert await store.word_rules(2) == []
        assert await store.clear_word_rules(1) == 3
        assert await store.word_rules(1) == []


class TestLoadTimes:
    async def test_last_measurement_wins(self, store):
        assert await store.load_time("runs/a/checkpoint-1") is None
        await store.record_load_time("runs/a/checkpoint-1", 12.0)
        await store.record_load_time("runs/a/checkpoint-1", 8.5)
        assert await store.load_time("runs/a/checkpoint-1") == 8.5
