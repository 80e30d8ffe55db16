"""The SQLite store: migrations, every table's round trip, transactions, and durability across a kill."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
from datetime import datetime, timezone

import pytest

from bot.store import MIGRATIONS, Store

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def store(tmp_path):
    async with await Store.open(tmp_path / "bot.db") as s:
        yield s


class TestSchema:
    async def test_new_database_is_at_latest_version_in_wal(self, tmp_path):
        async with await Store.open(tmp_path / "a.db") as s:
            assert await s.schema_version() == len(MIGRATIONS)
        with sqlite3.connect(tmp_path / "a.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    async def test_reopen_keeps_data_and_version(self, tmp_path):
        async with await Store.open(tmp_path / "a.db") as s:
            await s.set_opt_out(5, True)
        async with await Store.open(tmp_path / "a.db") as s:
            assert await s.schema_version() == len(MIGRATIONS)
            assert await s.opted_out_ids() == {5}

    async def test_newer_schema_is_refused(self, tmp_path):
        async with await Store.open(tmp_path / "a.db"):
            pass
        with sqlite3.connect(tmp_path / "a.db") as conn:
            conn.execute("UPDATE schema_version SET version = 99")
        with pytest.raises(RuntimeError, match="schema version 99"):
            await Store.open(tmp_path / "a.db")

    async def test_foreign_tables_are_left_alone(self, tmp_path):
        with sqlite3.connect(tmp_path / "a.db") as conn:
            conn.execute("CREATE TABLE youtube_videos (id TEXT PRIMARY KEY)")
            conn.execute("INSERT INTO youtube_videos VALUES ('abc')")
        async with await Store.open(tmp_path / "a.db"):
            pass
        with sqlite3.connect(tmp_path / "a.db") as conn:
            assert conn.execute("SELECT id FROM youtube_videos").fetchall() == [("abc",)]


class TestContext:
    async def test_recent_context_is_oldest_first_and_limited(self, store):
        for i in range(5):
            await store.add_context(1, 100 + i, f"u{i}", f"t{i}", T0)
        await store.add_context(2, 200, "other", "x", T0)
        msgs = await store.recent_context(1, 3)
        assert [m.text for m in msgs] == ["t2", "t3", "t4"]
        assert msgs[0].created_at == T0 and msgs[0].channel_id == 1

    async def test_clone_reply_stored_as_cloned_author(self, store):
        await store.add_context(1, 7, "alice", "hi", T0, is_clone=True)
        (m,) = await store.recent_context(1, 10)
        assert (m.author, m.is_clone) == ("alice", True)

    async def test_same_message_id_updates_instead_of_duplicating(self, store):
        await store.add_context(1, 7, "alice", "v1", T0)
        await store.add_context(1, 7, "alice", "v2", T0)
        await store.update_context_text(1, 7, "v3")
        assert [m.text for m in await store.recent_context(1, 10)] == ["v3"]

    async def test_delete_and_clear(self, store):
        await store.add_context(1, 7, "a", "x", T0)
        await store.add_context(1, 8, "b", "y", T0)
        await store.delete_context_message(1, 7)
        assert [m.message_id for m in await store.recent_context(1, 10)] == [8]
        await store.clear_context(1)
        assert await store.recent_context(1, 10) == []

    async def test_context_is_bounded_per_channel(self, store, monkeypatch):
        monkeypatch.setattr("bot.store.CONTEXT_KEEP_PER_CHANNEL", 3)
        for i in range(6):
            await store.add_context(1, i, "a", str(i), T0)
        assert [m.text for m in await store.recent_context(1, 100)] == ["3", "4", "5"]


class TestChannelSettings:
    async def test_set_get_remove_reset(self, store):
        await store.set_channel_setting(1, "temperature", 0.7)
        await store.set_channel_setting(1, "autoreply", {"mode": "lurk", "threshold": 0.5})
        await store.set_channel_setting(2, "webhook", True)
        autoreply = {"mode": "lurk", "threshold": 0.5}
        assert await store.get_channel_settings(1) == {"temperature": 0.7, "autoreply": autoreply}
        await store.set_channel_setting(1, "temperature", None)
        assert "temperature" not in await store.get_channel_settings(1)
        await store.reset_channel_settings(1)
        assert await store.get_channel_settings(1) == {}
        assert await store.get_channel_settings(2) == {"webhook": True}


class TestConsentAndErasure:
    async def test_opt_out_erases_user_data(self, store):
        await store.add_context(1, 1, "alice", "mine", T0, author_id=42)
        await store.add_context(1, 2, "alice", "clone of me", T0, is_clone=True)
        await store.add_context(1, 3, "bob", "keep", T0, author_id=43)
        await store.record_reply(2, 1, "alice", 43, {"author": "alice"})
        await store.record_reply(9, 1, "bob", 42, {"author": "bob"})
        await store.add_feedback(9, 42, 1, [["bob", "x"]])
        await store.set_opt_out(42, True, names=["alice"])
        assert await store.opted_out_ids() == {42}
        assert [m.text for m in await store.recent_context(1, 10)] == ["keep"]
        assert await store.get_reply(2) is None and await store.get_reply(9) is None
        assert await store.list_feedback() == []
        await store.set_opt_out(42, False)
        assert await store.opted_out_ids() == set()


class TestRepliesAndFeedback:
    async def test_reply_round_trip_and_feedback_replace(self, store):
        req = {"history": [["bob", "hi"]], "author": "alice", "sampling": {"temperature": 0.5}}
        await store.record_reply(10, 1, "alice", 5, req)
        reply = await store.get_reply(10)
        assert (reply.author, reply.invoker_id, reply.request) == ("alice", 5, req)
        await store.add_feedback(10, 6, 1, req["history"])
        await store.add_feedback(10, 6, -1, req["history"])
        (fb,) = await store.list_feedback(10)
        assert fb["value"] == -1 and fb["context"] == [["bob", "hi"]]
        with pytest.raises(ValueError, match=r"\+1 or -1"):
            await store.add_feedback(10, 6, 3, [])
        await store.delete_reply(10)
        assert await store.get_reply(10) is None


class TestJobs:
    async def test_create_update_list(self, store, tmp_path):
        jid = await store.create_job({"hours": 1.0}, tmp_path / "run", 1234, name="m", channel_id=9)
        job = await store.get_job(jid)
        assert (job.status, job.pid, job.name, job.channel_id, job.config) == ("running", 1234, "m", 9, {"hours": 1.0})
        assert job.run_dir == str(tmp_path / "run") and job.progress is None
        await store.update_job(jid, progress={"step": 3, "total": 10}, message_id=77)
        await store.update_job(jid, status="done", checkpoint="ck", finished_at=T0)
        job = await store.get_job(jid)
        assert job.progress == {"step": 3, "total": 10} and job.message_id == 77
        assert (job.status, job.checkpoint, job.finished_at) == ("done", "ck", T0)
        other = await store.create_job({}, None, None)
        assert [j.id for j in await store.list_jobs()] == [other, jid]
        assert [j.id for j in await store.list_jobs(["running"])] == [other]
        assert await store.get_job(999) is None

    async def test_unknown_job_field_is_refused(self, store):
        jid = await store.create_job({}, None, None)
        with pytest.raises(ValueError, match="unknown job fields"):
            await store.update_job(jid, colour="red")


class TestSchedules:
    async def test_set_replace_remove(self, store):
        await store.set_schedule(1, "0 3 * * *")
        await store.set_schedule(2, "0 4 * * 1")
        await store.set_schedule(1, "0 5 * * *")
        assert [(s.guild_id, s.cron) for s in await store.list_schedules()] == [(1, "0 5 * * *"), (2, "0 4 * * 1")]
        await store.set_schedule(1, None)
        assert [s.guild_id for s in await store.list_schedules()] == [2]


class TestTransactions:
    async def test_failed_write_rolls_back(self, store):
        await store.add_context(1, 1, "a", "before", T0)
        with pytest.raises(sqlite3.IntegrityError):
            async with store._tx() as db:
                await db.execute("DELETE FROM context")
                await db.execute("INSERT INTO consent (user_id, opted_out, updated_at) VALUES (NULL, NULL, NULL)")
        assert [m.text for m in await store.recent_context(1, 10)] == ["before"]


def _write_then_report(path, conn_end, n):
    """Child process: acknowledge each write on a pipe, then get SIGKILLed by the parent mid-stream."""
    import asyncio

    async def main():
        store = await Store.open(path)
        for i in range(n):
            await store.add_context(1, i, "a", f"m{i}", T0)
            conn_end.send(i)
        await asyncio.sleep(60)

    asyncio.run(main())


class TestDurability:
    async def test_kill_loses_no_acknowledged_write(self, tmp_path):
        path = tmp_path / "kill.db"
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.get_context("fork").Process(target=_write_then_report, args=(path, child, 40))
        proc.start()
        acked = -1
        while acked < 20:
            acked = parent.recv()
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        while parent.poll():
            acked = parent.recv()
        async with await Store.open(path) as s:
            stored = [m.message_id for m in await s.recent_context(1, 1000)]
        assert stored[: acked + 1] == list(range(acked + 1))


class TestContextOrder:
    async def test_history_seeded_after_live_messages_sorts_by_time(self, store):
        from datetime import timedelta

        await store.add_context(1, 30, "live", "newest", T0 + timedelta(minutes=5))
        await store.add_context(1, 10, "seed", "oldest", T0)
        await store.add_context(1, 20, "seed", "middle", (T0 + timedelta(minutes=1)).isoformat())
        assert [m.text for m in await store.recent_context(1, 2)] == ["middle", "newest"]
