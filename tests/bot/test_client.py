"""The bot client end to end against the fake Discord: start-up, sync, the error path, context, resilience."""

from __future__ import annotations

PROBE = ("tests.bot.probe_cog",)


class TestStartup:
    async def test_connects_syncs_to_guild_and_answers(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            names = [c["name"] for c in fake_discord.commands[fake_discord.guild_id]]
            assert names == ["probe"]
            assert None not in fake_discord.commands  # nothing synced globally
            rec = await drv.slash("probe echo", text="hello there")
            await rec.answered()
            assert rec.original["content"] == "hello there"
            assert fake_discord.identify_count == 1
