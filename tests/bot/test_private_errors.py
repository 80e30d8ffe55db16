"""Errors stay private, refusals are free, loads are estimated from experience (issue 12 §8).

After a public `defer(thinking=True)`, Discord turns the first follow-up into the public placeholder whatever its
ephemeral flag says; the fake Discord does the same (`execute_webhook`), so these tests see what a channel would.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import discord

from tests.bot.test_cog_clone import REPLY
from tests.bot.test_export import seed_messages

ADMIN = discord.Permissions.all().value


@asynccontextmanager
async def started(start_bot, bot_settings, **changes) -> AsyncIterator:
    """The bot with some settings changed, its tiny model loaded."""
    async with start_bot(bot_settings.model_copy(update=changes)) as drv:
        await drv.wait_for(lambda: drv.bot.engine.status().loaded, timeout=60)
        yield drv


def public_answers(drv, rec) -> list[dict]:
    """Messages of the interaction that the whole channel can see."""
    channel = int(rec.payload["channel_id"])
    return [
        m for m in drv.fake.channel_messages(channel) if (m.get("interaction_metadata") or {}).get("id") == str(rec.id)
    ]


async def assert_private(drv, rec, expected: str) -> None:
    await rec.done(lambda r: expected in r.text, timeout=30)
    assert rec.ephemeral, rec.messages
    assert public_answers(drv, rec) == []


class TestErrorsAfterAPublicDefer:
    async def test_switch_to_a_missing_checkpoint_is_private(self, drv, tmp_path):
        drv.bot.registry.register("ghost", "deleted since", tmp_path / "gone" / "checkpoint-9")
        rec = await drv.slash("model switch", name="ghost", user="boss", perms=ADMIN)
        await assert_private(drv, rec, "gone")
        assert drv.bot.engine.status().model == "tiny"

    async def test_train_while_a_job_runs_is_private(self, drv):
        seed_messages(drv.fake, drv.fake.channel_ids["general"], 3)
        export = await drv.slash("admin export", user="boss", perms=ADMIN)
        await export.done(lambda r: "Exported" in r.text)
        await drv.bot.store.create_job({}, None, None, name="busy-run")
        rec = await drv.slash("admin train", user="boss", perms=ADMIN)
        await assert_private(drv, rec, "still running")

    async def test_export_and_index_failures_are_private(self, drv):
        drv.fake.inject("GET", r"/channels/\d+/messages$", 403)
        rec = await drv.slash("admin export", channel="random", user="boss", perms=ADMIN)
        await assert_private(drv, rec, "can't read the history")
        rec = await drv.slash("admin index", user="boss", perms=ADMIN)
        await assert_private(drv, rec, "run /admin export first")

    async def test_a_busy_engine_after_deferring_is_private(self, start_bot, bot_settings):
        async with started(start_bot, bot_settings, queue_depth=1) as drv:
            await drv.slash("sampling set", key="min_new_tokens", value="40", user="boss")
            users = ("alice", "bob", "carol", "boss")
            recs = [await drv.slash("clone speak", author="alice", user=u, max_new_tokens=40) for u in users]
            for rec in recs:
                await rec.answered(timeout=60)
            busy = [r for r in recs if "busy" in r.text]
            assert busy
            for rec in busy:
                assert rec.ephemeral and public_answers(drv, rec) == []


class TestRefusalsAreFree:
    async def test_a_refused_speak_does_not_start_the_cooldown(self, start_bot, bot_settings):
        async with started(start_bot, bot_settings, clone_cooldown_s=60) as drv:
            for options in ({"author": "mallory"}, {"author": "alice", "temperature": 9.0}):
                refused = await drv.slash("clone speak", **options)
                await refused.answered()
                assert "Slow down" not in refused.text and refused.ephemeral
            first = await drv.slash("clone speak", author="alice", max_new_tokens=2)
            await first.answered()
            assert REPLY.match(first.text)
            second = await drv.slash("clone speak", author="bob", max_new_tokens=2)
            await second.answered()
            assert "Slow down" in second.text and second.ephemeral

    async def test_a_speak_refused_while_loading_does_not_start_the_cooldown(self, start_bot, bot_settings):
        from cloneus import Cloneus

        release = threading.Event()

        def slow_load(path):
            release.wait(30)
            return Cloneus.from_pretrained(path)

        async with start_bot(bot_settings.model_copy(update={"clone_cooldown_s": 60}), loader=slow_load) as drv:
            refused = await drv.slash("clone speak", author="alice", max_new_tokens=2)
            await refused.answered()
            assert "loading, ready in about" in refused.text and refused.ephemeral
            release.set()
            await drv.wait_for(lambda: drv.bot.engine.status().loaded, timeout=60)
            retry = await drv.slash("clone speak", author="alice", max_new_tokens=2)
            await retry.answered()
            assert REPLY.match(retry.text)
