"""/clone end to end: the real bot, the tiny random model and the fake Discord (see conftest.py).

The tiny model's words are random, so assertions are about where text lands, its form (`**[Name]**`), what the
store remembers, and what Discord would ping; seed text gives a reply known content where a test needs it.
"""

from __future__ import annotations

import asyncio
import re

import discord
import pytest

from bot.render import MESSAGE_LIMIT

REPLY = re.compile(r"^\*\*\[(alice|bob|carol)\]\*\* ")
LOADING = 1 << 7


async def recorded(drv, message_id: int, timeout: float = 30):
    """The store's record of a clone reply, once the command that posted it has finished."""
    for _ in range(int(timeout / 0.05)):
        reply = await drv.bot.store.get_reply(message_id)
        if reply is not None:
            return reply
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no clone reply recorded for message {message_id}")


async def until(check, timeout: float = 30):
    """Poll an async `check()` until it returns something truthy."""
    for _ in range(int(timeout / 0.05)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise TimeoutError("condition never became true")


async def set_option(drv, key: str, value: str, user: str = "boss") -> None:
    rec = await drv.slash("sampling set", key=key, value=value, user=user)
    await rec.answered()
    assert rec.text.startswith("Set"), rec.text


@pytest.fixture
async def loaded(start_bot, bot_settings):
    """Factory: start the bot with some settings changed and wait for the tiny model."""

    async def start(**changes):
        cm = start_bot(bot_settings.model_copy(update=changes))
        driver = await cm.__aenter__()
        opened.append(cm)
        await driver.wait_for(lambda: driver.bot.engine.status().loaded, timeout=60)
        return driver

    opened = []
    yield start
    for cm in opened:
        await cm.__aexit__(None, None, None)


class TestSpeak:
    async def test_reply_is_streamed_recorded_and_remembered_as_the_clone(self, drv):
        rec = await drv.slash("clone speak", author="alice", user="bob", seed="hello there", max_new_tokens=6)
        await rec.answered()
        reply = await recorded(drv, rec.original_id)
        assert rec.text.startswith("**[alice]** hello there") and not rec.ephemeral
        assert reply.author == "alice" and reply.invoker_id == drv.fake.user_ids["bob"]
        assert reply.request["sampling"]["max_new_tokens"] == 6
        context = await drv.bot.store.recent_context(drv.fake.channel_ids["general"], 10)
        assert (context[-1].author, context[-1].is_clone) == ("alice", True)
        assert context[-1].text == reply.request["text"] and rec.text == f"**[alice]** {reply.request['text']}"

    async def test_edits_are_throttled_and_the_last_one_has_the_full_text(self, drv):
        await set_option(drv, "min_new_tokens", "60")
        rec = await drv.slash("clone speak", author="bob", max_new_tokens=60)
        await rec.answered()
        reply = await recorded(drv, rec.original_id)
        edits = drv.fake.calls_to("PATCH", rf"/messages/{rec.original_id}$")
        assert rec.edits()[-1] == f"**[bob]** {reply.request['text']}"
        gaps = [b.t - a.t for a, b in zip(edits, edits[1:-1], strict=False)]  # the final flush may follow at once
        assert all(gap >= 0.9 for gap in gaps), gaps

    async def test_a_long_reply_is_split_into_messages_under_the_limit(self, drv):
        seed = " ".join(["word"] * 420)  # ~2100 characters before the model adds any
        rec = await drv.slash("clone speak", author="carol", seed=seed, max_new_tokens=4)
        await rec.answered()
        reply = await recorded(drv, rec.original_id)
        assert len(rec.messages) == 2 and all(len(m["content"]) <= MESSAGE_LIMIT for m in rec.messages)
        assert " ".join(m["content"] for m in rec.messages) == f"**[carol]** {reply.request['text']}"
        assert reply.request["message_ids"] == [int(m["id"]) for m in rec.messages]

    async def test_mentions_ping_only_present_members_and_emoji_render(self, fake_discord, loaded):
        party = fake_discord.add_emoji("party")
        drv = await loaded()
        bob = fake_discord.user_ids["bob"]
        seed = f"@bob @everyone @here <@&{fake_discord.role_ids['Admins']}> @nobody :party:"
        rec = await drv.slash("clone speak", author="alice", seed=seed, max_new_tokens=2)
        await rec.answered()
        await recorded(drv, rec.original_id)
        message = rec.original
        assert f"<@{bob}>" in message["content"] and f"<:party:{party}>" in message["content"]
        assert "@nobody" in message["content"]
        assert message["pings"] == {"users": [bob], "roles": [], "everyone": False}

    async def test_unknown_author_and_out_of_range_option_are_explained(self, drv):
        rec = await drv.slash("clone speak", author="mallory")
        await rec.answered()
        assert "unknown author 'mallory'" in rec.text and rec.ephemeral
        rec = await drv.slash("clone speak", author="alice", temperature=9.0)
        await rec.answered()
        assert "temperature=9.0" in rec.text and "(0, 5]" in rec.text and rec.ephemeral
        assert drv.fake.channel_messages(drv.fake.channel_ids["general"]) == []  # refusals are private

    async def test_429_on_an_edit_is_retried_and_the_reply_lands(self, drv):
        drv.fake.inject("PATCH", r"^/webhooks/\d+/[^/]+/messages/", 429, times=1, retry_after=0.3)
        rec = await drv.slash("clone speak", author="alice", seed="still here", max_new_tokens=3)
        await rec.answered()
        reply = await recorded(drv, rec.original_id)
        assert [c.status for c in drv.fake.calls_to("PATCH", r"^/webhooks/")][:2] == [429, 200]
        assert rec.original["content"] == f"**[alice]** {reply.request['text']}"

    async def test_webhook_mode_posts_as_the_member_with_clone_suffix(self, drv):
        await set_option(drv, "webhook", "on")
        rec = await drv.slash("clone speak", author="alice", seed="via hook", max_new_tokens=3)
        await rec.done(lambda r: "Posted as" in r.text)
        assert rec.ephemeral
        posted = [m for m in drv.fake.channel_messages(drv.fake.channel_ids["general"]) if m.get("webhook_id")]
        posted = [m for m in posted if m["webhook_id"] != str(drv.fake.app_id)]
        assert len(posted) == 1 and posted[0]["author"]["username"] == "Alice (clone)"
        assert posted[0]["content"].startswith("via hook")
        reply = await recorded(drv, int(posted[0]["id"]))
        assert reply.request["webhook_id"] == int(posted[0]["webhook_id"])

        drv.fake.webhooks.clear()  # an admin deletes the webhook in the channel settings
        again = await drv.slash("clone speak", author="bob", seed="new hook", max_new_tokens=2)
        await again.done(lambda r: "Posted as" in r.text)
        assert [h["name"] for h in drv.fake.webhooks.values()] == ["CloneUs"]
        assert drv.fake.channel_messages(drv.fake.channel_ids["general"])[-1]["author"]["username"] == "Bob (clone)"


class TestQueueAndCooldown:
    async def test_a_full_queue_answers_busy_and_drops_nobody(self, loaded):
        drv = await loaded(queue_depth=1)
        await set_option(drv, "min_new_tokens", "60")
        users = ["alice", "bob", "carol", "boss"]
        recs = [await drv.slash("clone speak", author="alice", user=u, max_new_tokens=60) for u in users]
        for rec in recs:  # a busy answer replaces the public placeholder with a private message
            await rec.done(lambda r: r.messages and not any(m["flags"] & LOADING for m in r.messages) and r.text)
        busy = [r for r in recs if "busy" in r.text]
        answered = [r for r in recs if REPLY.match(r.text)]
        assert busy and answered and len(busy) + len(answered) == len(recs)
        assert all(r.ephemeral for r in busy)

    async def test_cooldown_refuses_a_second_generation(self, loaded):
        drv = await loaded(clone_cooldown_s=60)
        first = await drv.slash("clone speak", author="alice", max_new_tokens=2)
        second = await drv.slash("clone speak", author="bob", max_new_tokens=2)
        await first.answered()
        await second.answered()
        assert REPLY.match(first.text) and "Slow down" in second.text and second.ephemeral


class TestAuto:
    async def test_picks_speakers_for_each_turn(self, drv):
        rec = await drv.slash("clone auto", turns=2, mode="top", user="carol")
        await rec.done(lambda r: len(r.messages) == 2 and all(REPLY.match(m["content"]) for m in r.messages))
        for message in rec.messages:
            await recorded(drv, int(message["id"]))
        context = await drv.bot.store.recent_context(drv.fake.channel_ids["general"], 2)
        assert [m.is_clone for m in context] == [True, True]

    async def test_turns_out_of_range_is_refused(self, drv):
        rec = await drv.slash("clone auto", turns=0)
        await rec.answered()
        assert "turns=0" in rec.text and rec.ephemeral


class TestSayasAndContext:
    async def test_sayas_adds_to_context_and_show_lists_it(self, drv):
        rec = await drv.slash("clone sayas", author="bob", text="I never said that", user="carol")
        await rec.answered()
        assert rec.text == "**[bob]** I never said that"
        channel = drv.fake.channel_ids["general"]
        context = await until(lambda: drv.bot.store.recent_context(channel, 5))
        assert (context[-1].message_id, context[-1].author) == (rec.original_id, "bob")
        show = await drv.slash("clone context show", user="alice")
        await show.answered()
        assert "bob: I never said that" in show.text and show.ephemeral

    async def test_show_lists_what_the_model_reads(self, drv):
        drv.fake.user_ids["jukebox"] = drv.fake.add_member("jukebox", bot=True)
        for user, text in (("alice", "first"), ("jukebox", "Now playing"), ("alice", "second"), ("bob", "/shrug")):
            await drv.post_message(text, user=user)
        channel = drv.fake.channel_ids["general"]
        await until(lambda: _count(drv.bot.store.recent_context(channel, 10), 4))
        show = await drv.slash("clone context show", user="carol")
        await show.answered()
        # Another bot's message and a command are not context; alice's two messages are one burst, under the
        # name the model's index gives her.
        assert show.text.endswith("as the model reads it (turns: 1):\nalice: first\nsecond")

    async def test_sayas_unknown_author_is_refused(self, drv):
        rec = await drv.slash("clone sayas", author="mallory", text="hi")
        await rec.answered()
        assert "unknown author" in rec.text and rec.ephemeral

    async def test_clear_needs_manage_messages(self, drv):
        await drv.post_message("remember me", user="alice")
        channel = drv.fake.channel_ids["general"]
        await until(lambda: drv.bot.store.recent_context(channel, 5))
        denied = await drv.slash("clone context clear", user="carol")
        await denied.answered()
        assert "Manage Messages" in denied.text and await drv.bot.store.recent_context(channel, 5)
        # Discord resolves an administrator's permissions to all of them in the interaction payload.
        done = await drv.slash("clone context clear", user="boss", perms=discord.Permissions.all().value)
        await done.answered()
        assert await drv.bot.store.recent_context(channel, 5) == []
        empty = await drv.slash("clone context show")
        await empty.answered()
        assert "empty" in empty.text


class TestConsent:
    async def test_optout_refuses_speak_and_auto_until_optin(self, drv):
        rec = await drv.slash("clone optout", user="bob")
        await rec.answered()
        assert "opted out" in rec.text and rec.ephemeral
        assert drv.fake.user_ids["bob"] in await drv.bot.store.opted_out_ids()
        again = await drv.slash("clone optout", user="bob")
        await again.answered()
        assert "already" in again.text

        refused = await drv.slash("clone speak", author="bob", user="alice")
        await refused.answered()
        assert "opted out" in refused.text
        auto = await drv.slash("clone auto", turns=3, mode="uniform", user="alice")
        await auto.done(lambda r: len(r.messages) == 3)
        assert not any(m["content"].startswith("**[bob]**") for m in auto.messages)

        back = await drv.slash("clone optin", user="bob")
        await back.answered()
        allowed = await drv.slash("clone speak", author="bob", user="alice", max_new_tokens=2)
        await allowed.answered()
        assert allowed.text.startswith("**[bob]**")

    async def test_optin_without_optout_says_so(self, drv):
        rec = await drv.slash("clone optin", user="carol")
        await rec.answered()
        assert "not opted out" in rec.text


class TestRegenerateAndReactions:
    async def test_menu_regenerates_in_place_and_refuses_other_messages(self, drv):
        rec = await drv.slash("clone speak", author="alice", user="bob", seed="take one", max_new_tokens=4)
        await rec.answered()
        await recorded(drv, rec.original_id)
        versions = len(rec.edits())
        menu = await drv.context_menu("Regenerate", rec.original_id, user="carol")
        await menu.done(lambda r: "Regenerated" in r.text)
        assert menu.ephemeral and len(rec.edits()) > versions
        reply = await drv.bot.store.get_reply(rec.original_id)
        assert rec.edits()[-1] == f"**[alice]** {reply.request['text']}"

        plain = await drv.post_message("just a human", user="alice")
        refused = await drv.context_menu("Regenerate", int(plain["id"]), user="carol")
        await refused.answered()
        assert "not a clone reply" in refused.text

    async def test_reactions_record_feedback_regenerate_and_delete(self, drv):
        rec = await drv.slash("clone speak", author="carol", user="bob", max_new_tokens=3)
        await rec.answered()
        mid = rec.original_id
        reply = await recorded(drv, mid)

        await drv.react(mid, "👍", user="alice")
        await drv.react(mid, "👎", user="carol")
        feedback = await until(lambda: _two(drv.bot.store.list_feedback(mid)))
        assert sorted(f["value"] for f in feedback) == [-1, 1]
        assert feedback[0]["context"][-1] == ["carol", reply.request["text"]]

        versions = len(drv.fake.history[mid])
        await drv.react(mid, "🔁", user="alice")
        await drv.wait_for(lambda: len(drv.fake.history[mid]) > versions, timeout=30)

        await drv.react(mid, "🗑️", user="carol")  # neither the invoker nor an admin
        await asyncio.sleep(0.5)  # give the refused delete time to (not) happen
        assert mid in drv.fake.messages
        await drv.react(mid, "🗑️", user="bob")
        await drv.wait_for(lambda: mid not in drv.fake.messages)
        assert await until(lambda: _forgotten(drv.bot.store, mid))


class TestAutoReply:
    async def test_always_answers_organic_messages_and_off_stays_quiet(self, drv):
        channel = drv.fake.channel_ids["general"]
        await drv.post_message("nobody answers this", user="alice")
        await set_option(drv, "autoreply", "always")
        before = len(drv.fake.channel_messages(channel))
        await drv.post_message("anyone around?", user="alice")

        def clone_posts():
            messages = drv.fake.channel_messages(channel)
            return [m for m in messages if "interaction_metadata" not in m and REPLY.match(m["content"])]

        posts = await drv.wait_for(clone_posts, timeout=30)
        reply = await recorded(drv, int(posts[0]["id"]))
        # Two messages of hers a moment apart are one burst, as training merges them.
        assert reply.request["history"][-1] == ["alice", "nobody answers this\nanyone around?"]
        assert reply.invoker_id == drv.fake.user_ids["alice"]  # so she may 🗑️ it
        # The message sent while auto-reply was off started no generation; had it, its reply would be here too.
        assert len(clone_posts()) == 1 and drv.fake.channel_messages(channel).index(posts[0]) >= before

    async def test_a_command_message_is_neither_answered_nor_context(self, drv):
        channel = drv.fake.channel_ids["general"]
        await set_option(drv, "autoreply", "always")
        before = len(drv.fake.channel_messages(channel))
        await drv.post_message("!skip this song", user="carol")
        await until(lambda: drv.bot.store.recent_context(channel, 5))
        await asyncio.sleep(0.5)  # give a wrongly started reply time to appear
        assert len(drv.fake.channel_messages(channel)) == before + 1
        show = await drv.slash("clone context show", user="alice")
        await show.answered()
        assert "empty" in show.text

    async def test_bad_autoreply_value_is_refused(self, drv):
        rec = await drv.slash("sampling set", key="autoreply", value="sometimes", user="boss")
        await rec.answered()
        assert "expected off, always or lurk" in rec.text


async def test_other_commands_are_answered_while_a_reply_generates(drv):
    await set_option(drv, "min_new_tokens", "80")
    speak = await drv.slash("clone speak", author="alice", max_new_tokens=80)
    await speak.done(lambda r: r.original_id and len(r.edits()) >= 2)  # streaming has begun
    status = await drv.slash("model status")
    await status.answered()
    assert await drv.bot.store.get_reply(speak.original_id) is None  # the reply is still being written
    await recorded(drv, speak.original_id)


async def _count(rows, n: int):
    rows = await rows
    return rows if len(rows) == n else None


async def _two(rows):
    rows = await rows
    return rows if len(rows) == 2 else None


async def _forgotten(store, message_id: int) -> bool:
    return await store.get_reply(message_id) is None


async def test_youtube_links_are_encoded_for_the_model_and_decoded_for_discord(drv, tmp_path):
    from cloneus.config import YoutubeConfig
    from cloneus.plugins.youtube import YouTubeLinks

    links = YouTubeLinks(YoutubeConfig(db_path=str(tmp_path / "yt.db")))  # cache only: no API key, no network
    links.cache.store_lookup({"dQw4w9WgXcQ": ("Never Gonna Give You Up", "Rick Astley")}, [])
    drv.bot.youtube = links
    await drv.post_message("watch https://youtu.be/dQw4w9WgXcQ", user="alice")
    channel = drv.fake.channel_ids["general"]
    await until(lambda: drv.bot.store.recent_context(channel, 5))
    tag = links.encode("https://youtu.be/dQw4w9WgXcQ")
    assert tag != "https://youtu.be/dQw4w9WgXcQ"
    seed = f"https://youtu.be/AAAAAAAAAAA and {tag} ok"  # generated words follow "ok", never glue onto a link
    before = links.stats()["lookups"]
    rec = await drv.slash("clone speak", author="bob", seed=seed, max_new_tokens=2)
    await rec.answered()
    reply = await recorded(drv, rec.original_id)
    # Lookups count video ids: 1 for the context's link (encoded before generation) + 2 in the reply (decoded).
    assert links.stats()["lookups"] - before >= 3
    assert links.decode(seed) in reply.request["text"] and "youtube.com/watch?v=dQw4w9WgXcQ" in rec.text
    assert "AAAAAAAAAAA" not in rec.text and tag not in rec.text
