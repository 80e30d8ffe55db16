"""The fake Discord itself, driven by the unmodified discord.py client: the routes the cogs rely on behave like
Discord's (history pagination, webhooks, attachments, reactions, follow-ups after a deferral, mention pings).
"""

from __future__ import annotations

import asyncio
import io

import discord

from bot.render import SAFE_MENTIONS

PROBE = ("tests.bot.probe_cog",)


class TestFakeDiscord:
    async def test_history_pages_both_ways(self, start_bot, fake_discord):
        general = fake_discord.channel_ids["general"]
        alice = fake_discord.members[fake_discord.user_ids["alice"]]["user"]
        for i in range(230):
            fake_discord.create_message(general, alice, {"content": f"m{i}"}, dispatch=False)
        async with start_bot(extensions=PROBE, settings=None) as drv:
            channel = drv.bot.get_channel(general)
            newest_first = [m.content async for m in channel.history(limit=None)]
            assert newest_first == [f"m{i}" for i in reversed(range(230))]
            after = [m async for m in channel.history(limit=None, oldest_first=True)]
            pivot = after[99]
            rest = [m.content async for m in channel.history(limit=None, after=pivot, oldest_first=True)]
            assert rest == [f"m{i}" for i in range(100, 230)]
            assert len(fake_discord.calls_to("GET", rf"/channels/{general}/messages$")) >= 3 + 3 + 2

    async def test_webhook_send_edit_and_attachments(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            channel = drv.bot.get_channel(fake_discord.channel_ids["general"])
            hook = await channel.create_webhook(name="cloneus")
            assert [h.id for h in await channel.webhooks()] == [hook.id]
            msg = await hook.send("hi", username="Alice (clone)", avatar_url="http://x/a.png", wait=True)
            assert msg.author.name == "Alice (clone)" and msg.webhook_id == hook.id
            await hook.edit_message(msg.id, content="hi again")
            assert fake_discord.history[msg.id] == ["hi", "hi again"]
            sent = await channel.send("plot", file=discord.File(io.BytesIO(b"PNGDATA"), filename="loss.png"))
            (att,) = sent.attachments
            assert att.filename == "loss.png" and await att.read() == b"PNGDATA"

    async def test_reactions_reach_the_bot(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            msg = await drv.bot.get_channel(fake_discord.channel_ids["general"]).send("react to me")
            waiter = asyncio.create_task(drv.bot.wait_for("raw_reaction_add", timeout=10))
            await drv.react(msg.id, "👍", user="bob")
            event = await waiter
            assert (event.message_id, str(event.emoji), event.user_id) == (
                msg.id,
                "👍",
                fake_discord.user_ids["bob"],
            )
            await msg.add_reaction("🔁")
            assert fake_discord.messages[msg.id]["reactions"][0]["emoji"]["name"] == "🔁"

    async def test_first_followup_after_defer_fills_the_placeholder(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            await drv.wait_for(lambda: drv.bot.engine.status().loaded, timeout=60)
            rec = await drv.slash("probe generate", author="alice")
            await rec.answered(timeout=60)
            assert len(rec.messages) == 1 and rec.original["content"].startswith("**[alice]**")
            assert rec.edits() == ["", rec.original["content"]]

    async def test_pings_follow_allowed_mentions(self, start_bot, fake_discord):
        bob = fake_discord.user_ids["bob"]
        async with start_bot(extensions=PROBE) as drv:
            channel = drv.bot.get_channel(fake_discord.channel_ids["general"])
            text = f"@everyone <@&{fake_discord.role_ids['Admins']}> <@{bob}>"
            safe = await channel.send(text, allowed_mentions=SAFE_MENTIONS)
            unsafe = await channel.send(text, allowed_mentions=discord.AllowedMentions.all())
            assert fake_discord.messages[safe.id]["pings"] == {"users": [bob], "roles": [], "everyone": False}
            assert fake_discord.messages[unsafe.id]["pings"]["everyone"] is True

    async def test_state_added_while_connected_reaches_the_bot(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            guild = drv.bot.get_guild(fake_discord.guild_id)
            uid = fake_discord.add_member("dave", nick="Dave")
            eid = fake_discord.add_emoji("party")
            cid = fake_discord.add_channel("news")
            await drv.wait_for(lambda: guild.get_member(uid) and guild.get_channel(cid) and guild.emojis)
            assert guild.get_member(uid).display_name == "Dave"
            assert [(e.id, e.name) for e in guild.emojis] == [(eid, "party")]
