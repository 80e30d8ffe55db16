"""/clone for a group (issue 12 §1-§3, §6): several clones at once, scenes, auto with candidates, auto-reply
triggers, the base model, zero-shot names, raw context paging, clear and restore. End to end, as in
test_cog_clone.py: the real bot, the tiny random model and the fake Discord."""

from __future__ import annotations

import re

import discord

from tests.bot.test_cog_clone import REPLY, recorded, set_option, until

ADMIN_USER = "boss"
ADMIN = discord.Permissions.all().value


def clone_posts(drv, channel: str = "general") -> list[dict]:
    """Clone replies visible in the channel (`**[Name]** ...`), oldest first."""
    return [m for m in drv.fake.channel_messages(drv.fake.channel_ids[channel]) if REPLY.match(m["content"])]


async def refused(drv, command: str, expected: str, **options) -> None:
    """The command is answered privately with `expected` and posts nothing in the channel."""
    before = len(drv.fake.channel_messages(drv.fake.channel_ids["general"]))
    rec = await drv.slash(command, **options)
    await rec.answered()
    assert expected in rec.text and rec.ephemeral, rec.text
    assert len(drv.fake.channel_messages(drv.fake.channel_ids["general"])) == before


class TestSpeakSeveral:
    async def test_each_author_answers_the_same_context_in_its_own_message(self, drv):
        await drv.post_message("what should we eat tonight?", user="carol")
        rec = await drv.slash("clone speak", authors="alice, bob", seed="I say", max_new_tokens=4)
        await rec.done(lambda r: len(r.messages) == 2 and all(REPLY.match(m["content"]) for m in r.messages))
        assert [REPLY.match(m["content"]).group(1) for m in rec.messages] == ["alice", "bob"]
        # bob's message was posted first as a placeholder, in order, then edited as his reply streamed in
        assert drv.fake.history[int(rec.messages[1]["id"])][0] == "**[bob]** "
        replies = [await recorded(drv, int(m["id"])) for m in rec.messages]
        assert replies[0].request["history"] == replies[1].request["history"]  # the same context for both
        assert replies[0].request["history"][-1] == ["carol", "what should we eat tonight?"]
        assert all(r.request["text"].startswith("I say") for r in replies)
        context = await drv.bot.store.recent_context(drv.fake.channel_ids["general"], 10)
        assert [(m.author, m.is_clone) for m in context[-2:]] == [("alice", True), ("bob", True)]

    async def test_bad_author_lists_are_refused_privately(self, drv):
        await refused(drv, "clone speak", "either author", author="alice", authors="bob")
        await refused(drv, "clone speak", "either author")
        await refused(drv, "clone speak", "unknown author 'mallory'", authors="alice, mallory")
        await refused(drv, "clone speak", "at most 5", authors="a, b, c, d, e, f")
        await refused(drv, "clone speak", "name at least one member", authors=" , ")
        await refused(drv, "clone speak", "not authors", authors="alice, bob", new=True)


class TestCommandMessages:
    async def test_a_command_message_never_reaches_a_speak_prompt(self, drv):
        channel = drv.fake.channel_ids["general"]
        await drv.post_message("real talk", user="carol")
        await drv.post_message("!play some song", user="bob")
        await until(lambda: _len_at_least(drv.bot.store.recent_context(channel, 10), 2))
        rec = await drv.slash("clone speak", author="alice", max_new_tokens=2)
        await rec.answered()
        reply = await recorded(drv, rec.original_id)
        assert reply.request["history"] == [["carol", "real talk"]]
        assert "!play" not in await drv.bot.engine.prompt_text(reply.request["history"], "alice", {})


class TestScene:
    async def test_the_cast_speaks_in_turn_and_each_turn_sees_the_last(self, drv):
        await set_option(drv, "max_new_tokens", "4")
        rec = await drv.slash("clone scene", authors="alice, bob", turns=3)
        await rec.done(lambda r: len(r.messages) == 3 and all(REPLY.match(m["content"]) for m in r.messages))
        assert [REPLY.match(m["content"]).group(1) for m in rec.messages] == ["alice", "bob", "alice"]
        replies = [await recorded(drv, int(m["id"])) for m in rec.messages]
        for earlier, later in zip(replies, replies[1:], strict=False):
            assert later.request["history"][-1] == [earlier.author, earlier.request["text"]]

    async def test_without_authors_the_model_picks_and_refusals_are_private(self, drv):
        await set_option(drv, "max_new_tokens", "4")
        rec = await drv.slash("clone scene", turns=2)
        await rec.done(lambda r: len(r.messages) == 2 and all(REPLY.match(m["content"]) for m in r.messages))
        await refused(drv, "clone scene", "unknown author 'mallory'", authors="mallory")
        await refused(drv, "clone scene", "choose between 1 and 10", turns=11)


class TestAutoCandidates:
    async def test_candidates_inverse_mode_and_seed(self, drv):
        await set_option(drv, "max_new_tokens", "4")
        rec = await drv.slash("clone auto", authors="carol", mode="inverse", seed="hey all")
        await rec.answered()
        assert rec.text.startswith("**[carol]** hey all")
        await refused(drv, "clone auto", "unknown author 'zed'", authors="zed")


class TestAutoReplyRules:
    async def test_opted_in_trigger_with_a_fixed_author(self, drv):
        await set_option(drv, "max_new_tokens", "4")
        await set_option(drv, "autoreply", "always")
        await set_option(drv, "autoreply_trigger", "opted-in")
        await set_option(drv, "autoreply_author", "bob")
        await drv.post_message("anyone here?", user="alice")
        optin = await drv.slash("clone autoreply", state="on", user="carol")
        await optin.answered()
        assert optin.ephemeral and "may now answer" in optin.text
        await drv.post_message("I am here", user="carol")
        posts = await until(lambda: _async(clone_posts(drv)))
        assert [REPLY.match(p["content"]).group(1) for p in posts] == ["bob"]  # alice's message got no reply
        off = await drv.slash("clone autoreply", state="off", user="carol")
        await off.answered()
        assert await drv.bot.store.autoreply_optins(drv.fake.guild_id) == set()

    async def test_mention_trigger_and_candidates(self, drv):
        await set_option(drv, "max_new_tokens", "4")
        await set_option(drv, "autoreply", "always")
        await set_option(drv, "autoreply_trigger", "mention")
        await set_option(drv, "autoreply_authors", "carol")
        await drv.post_message("no mention here", user="alice")
        await drv.post_message(f"<@{drv.fake.app_id}> your turn", user="alice")
        posts = await until(lambda: _async(clone_posts(drv)))
        assert [REPLY.match(p["content"]).group(1) for p in posts] == ["carol"]

    async def test_bad_values_are_refused(self, drv):
        for key, value, expected in (
            ("autoreply_trigger", "sometimes", "expected one of any, mention, opted-in"),
            ("autoreply_author", "mallory", "unknown author 'mallory'"),
            ("autoreply_authors", "alice, zed", "unknown author 'zed'"),
        ):
            rec = await drv.slash("sampling set", key=key, value=value, user=ADMIN_USER, perms=ADMIN)
            await rec.answered()
            assert expected in rec.text and rec.ephemeral
        assert "autoreply_author" not in await drv.bot.store.get_channel_settings(drv.fake.channel_ids["general"])


async def _async(value):
    return value


class TestAsk:
    async def test_the_base_model_keeps_its_own_short_chat(self, drv):
        rec = await drv.slash("clone ask", prompt="what is a segfault?", max_new_tokens=5)
        await rec.answered()
        assert not rec.ephemeral and not REPLY.match(rec.text)
        channel = drv.fake.channel_ids["general"]
        await until(lambda: _len_at_least(drv.bot.store.recent_base_messages(channel, 10), 2))
        turns = await drv.bot.store.recent_base_messages(channel, 10)
        assert [(t.role, t.text) for t in turns] == [("user", "what is a segfault?"), ("assistant", rec.text)]
        again = await drv.slash("clone ask", prompt="and a deadlock?", system="answer briefly", max_new_tokens=3)
        await again.answered()
        await until(lambda: _len_at_least(drv.bot.store.recent_base_messages(channel, 10), 4))
        assert await drv.bot.store.recent_context(channel, 10) == []  # never mixed into the clone context

    async def test_clear_which_and_restore(self, drv):
        channel = drv.fake.channel_ids["general"]
        await drv.post_message("a clone-context message", user="alice")
        await until(lambda: drv.bot.store.recent_context(channel, 10))
        rec = await drv.slash("clone ask", prompt="hello", max_new_tokens=2)
        await rec.answered()
        await until(lambda: _len_at_least(drv.bot.store.recent_base_messages(channel, 10), 2))
        clear = await drv.slash("clone context clear", which="base", user=ADMIN_USER, perms=ADMIN)
        await clear.answered()
        assert "2 base-model turns" in clear.text
        assert await drv.bot.store.recent_base_messages(channel, 10) == []
        assert len(await drv.bot.store.recent_context(channel, 10)) == 1
        clear = await drv.slash("clone context clear", which="all", user=ADMIN_USER, perms=ADMIN)
        await clear.answered()
        assert await drv.bot.store.recent_context(channel, 10) == []
        restore = await drv.slash("clone context restore", user=ADMIN_USER, perms=ADMIN)
        await restore.answered()
        assert "Restored 1 clone-context messages and 2 base-model turns" in restore.text
        assert [m.text for m in await drv.bot.store.recent_context(channel, 10)] == ["a clone-context message"]
        await refused(drv, "clone context restore", "nothing to restore", user=ADMIN_USER, perms=ADMIN)
        await refused(drv, "clone context clear", "Manage Messages", user="alice")

    async def test_refusals_are_private(self, drv):
        await refused(drv, "clone ask", "prompt is empty", prompt="   ")
        await refused(drv, "clone ask", "choose between 1 and 512", prompt="hi", max_new_tokens=9999)
        unload = await drv.slash("model unload", user=ADMIN_USER, perms=ADMIN)
        await unload.answered()
        await refused(drv, "clone ask", "no model is loaded", prompt="hi")


async def _len_at_least(coro, n: int) -> bool:
    return len(await coro) >= n


class TestZeroShot:
    async def test_a_new_name_is_spoken_and_marked(self, drv):
        rec = await drv.slash("clone speak", author="Zed", new=True, seed="hi, I'm new", max_new_tokens=3)
        await rec.answered()
        assert rec.text.startswith("**[Zed]** *(zero-shot)* hi, I'm new")
        reply = await recorded(drv, rec.original_id)
        assert reply.request["zero_shot"] is True and reply.author == "Zed"
        context = await drv.bot.store.recent_context(drv.fake.channel_ids["general"], 10)
        assert context[-1].author == "Zed" and not context[-1].text.startswith("*(zero-shot)*")

    async def test_without_new_and_for_opted_out_members_it_is_refused(self, drv):
        await refused(drv, "clone speak", "unknown author 'Zed'", author="Zed")
        for user in ("carol", "boss"):  # carol is in the model's index, boss only a member of the server
            out = await drv.slash("clone optout", user=user)
            await out.answered()
        await refused(drv, "clone speak", "opted out", author="carol", new=True)
        await refused(drv, "clone speak", "opted out", author="boss", new=True)
        await refused(drv, "clone speak", "new author", author="x" * 40, new=True)


class TestRawContext:
    async def test_pages_the_exact_prompt_with_previous_and_next(self, drv):
        for i in range(40):
            await drv.post_message(f"message number {i} " + "filler words " * 8, user=("alice", "bob")[i % 2])
        channel = drv.fake.channel_ids["general"]
        await until(lambda: _len_at_least(drv.bot.store.recent_context(channel, 100), 40))
        rec = await drv.slash("clone context show", raw=True, author="bob")
        await rec.answered()
        assert rec.ephemeral
        history = [(m.author, m.text) for m in await drv.bot.store.recent_context(channel, drv.settings.ctx_limit)]
        prompt = await drv.bot.engine.prompt_text(history, "bob", {})
        first = rec.original["content"]
        total = int(re.search(r"page 1/(\d+)$", first).group(1))
        assert total >= 2 and first.startswith("```\n")
        pages = [first]
        for page in range(2, total + 1):
            click = await drv.click(rec.original_id, "Next")
            await click.response()
            await drv.wait_for(lambda p=page: rec.original["content"].endswith(f"page {p}/{total}"))
            pages.append(rec.original["content"])
        bodies = [re.match(r"```\n(.*)\n```\npage \d+/\d+$", p, re.DOTALL).group(1) for p in pages]
        assert "".join(bodies).replace("\n", "").replace(" ", "") == prompt.replace("\n", "").replace(" ", "")
        back = await drv.click(rec.original_id, "Previous")
        await back.response()
        await drv.wait_for(lambda: rec.original["content"].endswith(f"page {total - 1}/{total}"))

    async def test_raw_refusals(self, drv):
        await refused(drv, "clone context show", "unknown author 'mallory'", raw=True, author="mallory")
        await refused(drv, "clone context show", "only applies with raw", author="alice")
