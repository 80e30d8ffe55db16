"""Threads in a served channel (issue 12 §6): the bot joins them, each has its own context seeded with the
starter message, and /clone speak in a thread answers the thread's context only."""

from __future__ import annotations

from tests.bot.test_cog_clone import recorded, set_option, until


async def _rows(drv, channel_id: int, n: int = 1):
    rows = await drv.bot.store.recent_context(channel_id, 50)
    return rows if len(rows) >= n else None


class TestThreads:
    async def test_the_bot_joins_and_the_thread_has_its_own_context(self, drv):
        general = drv.fake.channel_ids["general"]
        await drv.post_message("a message only the channel sees", user="bob")
        starter = await drv.post_message("let's plan the trip here", user="alice")
        await until(lambda: _rows(drv, general, 2))
        thread = drv.fake.add_thread(general, "trip", starter_id=int(starter["id"]), owner="alice")
        await drv.wait_for(lambda: drv.fake.app_id in drv.fake.thread_members[thread], message="bot never joined")
        rows = await until(lambda: _rows(drv, thread))
        assert [(m.author_id, m.text) for m in rows] == [(drv.fake.user_ids["alice"], "let's plan the trip here")]

        await drv.post_message("I vote for the coast", user="carol", channel=thread)
        await until(lambda: _rows(drv, thread, 2))
        await set_option(drv, "max_new_tokens", "3")
        rec = await drv.slash("clone speak", author="bob", channel=thread, max_new_tokens=3)
        await rec.answered()
        reply = await recorded(drv, rec.original_id)
        assert reply.channel_id == thread
        assert reply.request["history"] == [["alice", "let's plan the trip here"], ["carol", "I vote for the coast"]]
        assert [(m.author, m.is_clone) for m in await drv.bot.store.recent_context(thread, 10)][-1] == ("bob", True)
        assert "I vote for the coast" not in [m.text for m in await drv.bot.store.recent_context(general, 50)]

    async def test_threads_of_channels_the_bot_does_not_serve_are_left_alone(self, drv):
        other = drv.fake.channel_ids["random"]
        thread = drv.fake.add_thread(other, "elsewhere", owner="bob")
        await drv.post_message("hello?", user="bob", channel=thread)
        served = drv.fake.add_thread(drv.fake.channel_ids["general"], "served", owner="bob")
        await drv.wait_for(lambda: drv.fake.app_id in drv.fake.thread_members[served])
        assert drv.fake.app_id not in drv.fake.thread_members[thread]
        assert await drv.bot.store.recent_context(thread, 10) == []
        assert await drv.bot.store.recent_context(served, 10) == []  # no starter message: an empty context
