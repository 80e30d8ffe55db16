"""`/admin train feedback:true` end to end: clone replies, 👍/👎 and a regenerated pair through the fake Discord,
then a real `cloneus train --feedback` subprocess that registers the tuned checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bot.test_cog_admin import POLL_S, _final, admin, write_train_config
from tests.bot.test_cog_clone import recorded, until

FEEDBACK_SECTION = """feedback:
  min_examples: 4
  min_pairs: 8
  holdout_frac: 0.25
  batch_size: 2
"""


async def speak_and_react(drv, author: str, emoji: str, voter: str = "carol") -> int:
    rec = await drv.slash("clone speak", author=author, user="bob", max_new_tokens=4)
    await rec.answered()
    await recorded(drv, rec.original_id)
    await drv.react(rec.original_id, emoji, user=voter)
    return rec.original_id


async def _votes(store, message_id: int, count: int):
    rows = await store.list_feedback(message_id)
    return rows if len(rows) >= count else None


class TestFeedbackJob:
    async def test_too_few_reactions_are_refused_with_how_many_more(self, drv):
        mid = await speak_and_react(drv, "alice", "👍")
        await until(lambda: _votes(drv.bot.store, mid, 1))
        rec = await admin(drv, "admin train", feedback=True)
        assert "not enough feedback" in rec.text and "more are needed" in rec.text
        assert await drv.bot.store.list_jobs() == []

    async def test_chat_options_and_unknown_models_are_refused(self, drv):
        rec = await admin(drv, "admin train", feedback=True, chunk_size=64)
        assert "chunk_size" in rec.text and "feedback:true takes" in rec.text
        rec = await admin(drv, "admin train", feedback=True, model="nope")
        assert "no model nope" in rec.text and "tiny" in rec.text

    async def test_a_member_can_vote_on_both_versions_of_a_regenerated_reply(self, drv):
        mid = await speak_and_react(drv, "alice", "👍", voter="alice")
        await until(lambda: _votes(drv.bot.store, mid, 1))
        versions = len(drv.fake.history[mid])
        await drv.react(mid, "🔁", user="alice")
        await drv.wait_for(lambda: len(drv.fake.history[mid]) > versions, timeout=30)
        reply = await until(lambda: _regenerated(drv.bot.store, mid))
        await drv.react(mid, "👎", user="alice")
        rows = await until(lambda: _votes(drv.bot.store, mid, 2))
        assert {(r["user_id"], r["value"]) for r in rows} == {(drv.fake.user_ids["alice"], 1),
                                                               (drv.fake.user_ids["alice"], -1)}  # fmt: skip
        assert {r["reply_text"] for r in rows if r["value"] == -1} == {reply.request["text"]}


async def _regenerated(store, message_id: int):
    rows = await store.list_feedback(message_id)
    reply = await store.get_reply(message_id)
    return reply if rows and reply.request["text"] != rows[0]["reply_text"] else None


@pytest.mark.slow
async def test_reactions_tune_the_served_model_into_a_registered_checkpoint(start_bot, bot_settings, tiny_model_dir,
                                                                           tmp_path):  # fmt: skip
    write_train_config(bot_settings.config_path, tiny_model_dir, tmp_path)
    with bot_settings.config_path.open("a", encoding="utf-8") as f:
        f.write(FEEDBACK_SECTION)
    async with start_bot(bot_settings) as drv:
        await drv.wait_for(lambda: drv.bot.engine.status().loaded, timeout=60)
        drv.bot.jobs.poll_interval_s = POLL_S
        ids = [await speak_and_react(drv, ("alice", "bob")[i % 2], "👍👎"[i % 2]) for i in range(8)]
        for mid in ids:
            await until(lambda mid=mid: _votes(drv.bot.store, mid, 1))

        rec = await admin(drv, "admin train", feedback=True, max_steps=2, name="tuned")
        assert "Started training job" in rec.text and "reactions to `tiny`" in rec.text
        job = (await drv.bot.store.list_jobs())[0]
        finished = await until(lambda: _final(drv.bot.store, job.id), timeout=240)
        assert finished.status == "done", finished.error
        entry = drv.bot.registry.get("tuned")
        assert entry is not None and Path(entry.ckpt).name == "checkpoint-2"
        assert "feedback" in entry.desc
        run = Path(entry.ckpt).parent
        record = json.loads((run / "feedback.json").read_text())
        assert record["method"] == "kto" and record["source_checkpoint"] == str(bot_settings_ckpt(drv))
        assert str(run).startswith(str(tmp_path / "runs"))

        switch = await drv.slash("model switch", name="tuned")
        await switch.answered(timeout=60)
        assert switch.text.startswith("Switched to `tuned`")


def bot_settings_ckpt(drv) -> Path:
    return drv.bot.registry.get("tiny").path
