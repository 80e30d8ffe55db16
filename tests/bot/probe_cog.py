"""A test-only cog exercising the client's machinery (sync, responses, deferral + streamed edits, the error
path, the engine) without depending on the product cogs.
"""

from __future__ import annotations

import asyncio

import discord
from discord import app_commands
from discord.ext import commands

from bot.engine import EngineBusy
from bot.render import SAFE_MENTIONS, StreamEditor, format_clone_reply


class Probe(commands.GroupCog, group_name="probe"):
    def __init__(self, bot):
        self.bot = bot

    @app_commands.command()
    async def echo(self, interaction: discord.Interaction, text: str):
        """Reply with the text."""
        await interaction.response.send_message(text, allowed_mentions=SAFE_MENTIONS)

    @app_commands.command()
    async def stream(self, interaction: discord.Interaction, words: int = 5, delay: float = 0.0):
        """Defer, then stream `words` words through StreamEditor edits of the original response."""
        await interaction.response.defer(thinking=True)

        async def send(content):
            return await interaction.followup.send(content, wait=True, allowed_mentions=SAFE_MENTIONS)

        async def edit(message, content):
            await message.edit(content=content, allowed_mentions=SAFE_MENTIONS)

        original = await interaction.original_response()
        editor = StreamEditor(send, edit, first=original, render=lambda t: format_clone_reply("probe", t))
        for i in range(words):
            await editor.push(f"w{i} ")
            await asyncio.sleep(delay)
        await editor.finish()

    @app_commands.command()
    async def generate(self, interaction: discord.Interaction, author: str):
        """Generate through the engine."""
        await interaction.response.defer(thinking=True)
        text = await self.bot.engine.generate([("bob", "hello")], author, sampling={"max_new_tokens": 4})
        await interaction.followup.send(format_clone_reply(author, text))

    @app_commands.command()
    async def fail(self, interaction: discord.Interaction, kind: str = "bug"):
        """Raise an error of the given kind."""
        if kind == "busy":
            raise EngineBusy(8)
        raise RuntimeError("probe failure")

    @app_commands.command()
    @app_commands.checks.has_permissions(manage_guild=True)
    async def admin(self, interaction: discord.Interaction):
        """Only for Manage Server."""
        await interaction.response.send_message("admin ok")


async def setup(bot):
    await bot.add_cog(Probe(bot))
