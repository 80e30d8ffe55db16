"""Clone replies after they are posted, and the replies nobody asked for: the "Regenerate" menu, 🔁/👍/👎/🗑️
reactions, and auto-reply to organic messages.

Auto-reply is set per channel with `/sampling set`: `autoreply` (off, always, lurk:<t>) says whether to answer,
`autoreply_trigger` which messages (any, mention: those that mention the bot, opted-in: those of members who ran
`/clone autoreply on`), `autoreply_author` a fixed clone to answer as, `autoreply_authors` the candidates the model
picks among.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.replies import ReplyService
from bot.speakers import Speakers
from cloneus.errors import CloneusError
from cogs.admin import is_admin
from cogs.sampling import autoreply_mode, request_sampling

if TYPE_CHECKING:
    from bot.client import CloneusBot

logger = logging.getLogger(__name__)

REGENERATE, THUMBS_UP, THUMBS_DOWN, WASTEBASKET = "🔁", "👍", "👎", "🗑️"
FEEDBACK = {THUMBS_UP: 1, THUMBS_DOWN: -1}


class ReplyEventsCog(commands.Cog):
    """Regenerate, reactions and auto-reply."""

    def __init__(self, bot: CloneusBot):
        self.bot = bot
        self.replies = ReplyService(bot)
        self.speakers = Speakers(bot)
        self.regenerate_menu = app_commands.ContextMenu(name="Regenerate", callback=self.regenerate_from_menu)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.regenerate_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.regenerate_menu.name, type=self.regenerate_menu.type)

    async def regenerate_from_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The "Regenerate" message menu: a fresh reply for the same request, in the same message."""
        reply = await self.bot.store.get_reply(message.id)
        if reply is None:
            raise CloneusError("that message is not a clone reply I remember")
        await interaction.response.defer(thinking=True, ephemeral=True)
        await self.replies.regenerate(message.channel, reply)
        await interaction.edit_original_response(content=f"Regenerated {reply.author}'s reply.")

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        emoji = str(payload.emoji)
        if emoji not in (REGENERATE, WASTEBASKET, *FEEDBACK) or payload.user_id == self.bot.user.id:
            return
        reply = await self.bot.store.get_reply(payload.message_id)
        channel = self.bot.get_channel(payload.channel_id)
        if reply is None or not isinstance(channel, discord.TextChannel | discord.Thread):
            return
        try:
            if emoji in FEEDBACK:
                context = [*reply.request.get("history", []), [reply.author, reply.request.get("text", "")]]
                await self.bot.store.add_feedback(payload.message_id, payload.user_id, FEEDBACK[emoji], context)
            elif emoji == REGENERATE:
                await self.replies.regenerate(channel, reply)
            elif payload.user_id == reply.invoker_id or (
                payload.member is not None
                and is_admin(payload.member, channel.permissions_for(payload.member), self.bot.settings)
            ):
                await self.replies.delete(channel, reply)
        except CloneusError as e:  # busy, loading, or the author opted out since: nobody to tell but the log
            logger.info("reaction %s on %d not handled: %s", emoji, payload.message_id, e)

    async def _triggered(self, message: discord.Message, trigger: str) -> bool:
        """Whether `message` is one the channel's `autoreply_trigger` answers."""
        if trigger == "mention":
            return self.bot.user is not None and any(u.id == self.bot.user.id for u in message.mentions)
        if trigger == "opted-in":
            return message.author.id in await self.bot.store.autoreply_optins(message.guild.id)
        return True

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Auto-reply: with `/sampling set autoreply always|lurk:<t>`, answer an organic message that meets the
        channel's trigger, as its fixed author or the predicted next speaker among its candidates (lurk stays
        silent unless someone is likely enough)."""
        if message.author.bot or message.webhook_id is not None or not self.bot.watches(message):
            return
        settings = await self.bot.store.get_channel_settings(message.channel.id)
        mode = autoreply_mode(settings.get("autoreply"))
        if mode is None or self.bot.context_entry(message, live=True) is None:
            return
        if not await self._triggered(message, settings.get("autoreply_trigger")):
            return
        try:
            # A message training would drop (`!skip`: how members speak past the bot) gets no reply either.
            if not await self.replies.is_context(message):
                return
            # The client's own on_message stores this message too; whichever ran first, it is in the history once.
            history = await self.replies.history(message.channel.id, message.guild, latest=message)
            if settings.get("autoreply_author"):
                author = await self.speakers.resolve(message.guild, settings["autoreply_author"])
            else:
                candidates = settings.get("autoreply_authors")
                author = await self.speakers.next_author(message.guild, history, mode, candidates)
            if author is None:
                return
            sampling = await request_sampling(self.bot.store, message.channel.id)
            target = self.replies.channel_target(message.channel)
            if settings.get("webhook"):
                target = await self.replies.webhook_target(message.channel, author)
            text, messages = await self.replies.stream(target, message.guild, history, author, None, sampling)
            request = {"history": history, "author": author, "seed_text": None, "sampling": sampling}
            # The member whose message triggered the reply counts as its invoker (they may 🗑️ it).
            await self.replies.remember(
                message.channel.id, messages, author, text, message.author.id, request, target.webhook_id
            )
        except CloneusError as e:  # busy, loading or no model: an unasked-for reply is simply skipped
            logger.info("auto-reply in %d skipped: %s", message.channel.id, e)


async def setup(bot: CloneusBot) -> None:
    await bot.add_cog(ReplyEventsCog(bot))
