"""`/clone game`: the "Real or clone?" game. Thin: parse, call `bot.game.GameService`, render.

The commands live under `/clone` (`/clone game play [rounds] [author]`, `/clone game stats`). Discord does not let
`/clone game` be both a command and a group, hence `play`. The group is a subcommand group of the clone cog's
group, added when this cog loads, so `cogs.clone` must load first (it does in `EXTENSIONS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.game import MAX_ROUNDS, GameService
from bot.render import split_message
from cloneus.errors import CloneusError

if TYPE_CHECKING:
    from bot.client import CloneusBot

AUTOCOMPLETE_LIMIT = 25


class GameGroup(app_commands.Group):
    """`/clone game play` and `/clone game stats`."""

    def __init__(self, game: GameService):
        super().__init__(name="game", description="Real or clone? Guess which messages the clones wrote")
        self.game = game

    async def _author_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        names = [n for n in self.game.bot.engine.authors if current.casefold() in n.casefold()]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_LIMIT]]

    @app_commands.command(name="play")
    @app_commands.describe(rounds="How many messages to guess", author="Only this member's messages (default: anyone)")
    @app_commands.autocomplete(author=_author_autocomplete)
    async def play(
        self,
        interaction: discord.Interaction,
        rounds: app_commands.Range[int, 1, MAX_ROUNDS] = 5,
        author: str | None = None,
    ) -> None:
        """Start a game here: is each message real, or the clone's? Vote with the buttons."""
        if not isinstance(interaction.channel, discord.TextChannel):
            raise CloneusError("the game is played in a server text channel")
        await interaction.response.defer(thinking=True)
        game_id, rounds = await self.game.start(interaction.channel, interaction.user.id, rounds, author)
        await interaction.edit_original_response(
            content=f"🎭 Game {game_id}: {rounds} round(s). Vote **Real** or **Clone** on each message (and who "
            f"wrote it when the name is hidden). A round closes after {self.game.round_seconds:.0f} s, or once "
            "everyone playing has voted."
        )

    @app_commands.command(name="stats")
    async def stats(self, interaction: discord.Interaction) -> None:
        """Fooled rates per member and model, attribution accuracy and players' scores in this server."""
        text = await self.game.stats_text(interaction.guild_id)
        await interaction.response.send_message(
            split_message(text)[0], allowed_mentions=discord.AllowedMentions.none()
        )


class GameCog(commands.Cog):
    """Holds the game service and hangs `/clone game` under the clone cog's group."""

    def __init__(self, bot: CloneusBot):
        self.bot = bot
        self.game = GameService(bot)
        self.group = GameGroup(self.game)

    def _clone_group(self) -> app_commands.Group:
        group = self.bot.tree.get_command("clone")
        if not isinstance(group, app_commands.Group):
            raise RuntimeError("cogs.game adds /clone game: load cogs.clone before it")
        return group

    async def cog_load(self) -> None:
        self._clone_group().add_command(self.group)

    async def cog_unload(self) -> None:
        await self.game.close()
        clone = self.bot.tree.get_command("clone")
        if isinstance(clone, app_commands.Group):  # at shutdown the clone cog may be gone, and the group with it
            clone.remove_command(self.group.name)


async def setup(bot: CloneusBot) -> None:
    await bot.add_cog(GameCog(bot))
