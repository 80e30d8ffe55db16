"""CloneusBot: the discord.py client. Loads the cogs, syncs commands, feeds channel context, reports errors.

Services (store, engine, jobs, registry, YouTube) are built by `run.py` and injected, so tests build the same bot
against a fake Discord. Start-up order in `setup_hook` (which runs once, after login and before the gateway
connects, unlike `on_ready` which fires again on every reconnect): load the cogs, copy the global commands to
each configured guild and sync there, seed each configured channel's context from its recent history, then
start loading the default model in the background.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.render import SAFE_MENTIONS, parse_clone_reply
from cloneus.errors import CloneusError

if TYPE_CHECKING:
    from bot.engine import Engine
    from bot.jobs import JobManager
    from bot.registry import ModelRegistry
    from bot.settings import Settings
    from bot.store import Store

logger = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.clone",
    "cogs.replies",
    "cogs.model",
    "cogs.admin",
    "cogs.sampling",
    "cogs.game",
)  # game extends /clone
CLONE_WEBHOOK_SUFFIX = " (clone)"  # webhook clone replies are posted as "<display name> (clone)"
GENERIC_ERROR = "Something went wrong on my side; the error was logged. Please try again."


def bot_intents() -> discord.Intents:
    """Only what the bot uses. Message Content and Server Members are privileged: enable them in the developer
    portal (Bot → Privileged Gateway Intents), or the gateway refuses the connection.
    """
    intents = discord.Intents.none()
    intents.guilds = True  # channels, roles, emoji
    intents.guild_messages = True  # the live context stream
    intents.message_content = True  # privileged: the text of those messages
    intents.members = True  # privileged: display names for user mapping and mentions
    intents.guild_reactions = True  # 👍/👎/🔁/🗑️ on clone replies
    intents.emojis_and_stickers = True  # :emoji: → guild emoji
    return intents


class CloneusTree(app_commands.CommandTree):
    """The single error path for every app command: user-caused errors become an ephemeral explanation; anything
    else is logged with its traceback and gets a generic reply.
    """

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, app_commands.CommandOnCooldown):
            message = f"Slow down: try again in {original.retry_after:.0f} s."
        elif isinstance(original, app_commands.CheckFailure):
            message = str(original) or "You are not allowed to use this command."
        elif isinstance(original, (CloneusError, app_commands.TransformerError)):
            message = str(original)
        else:
            command = interaction.command.qualified_name if interaction.command else "?"
            logger.error("command %r failed", command, exc_info=original)
            message = GENERIC_ERROR
        if interaction.type is discord.InteractionType.autocomplete:
            return
        try:
            await send_private(interaction, message)
        except discord.HTTPException:
            logger.exception("could not report an error to the user")


async def send_private(interaction: discord.Interaction, message: str) -> None:
    """Answer `interaction` with a message only its user sees, whatever state the response is in.

    After a public `defer(thinking=True)` that was never edited, Discord turns the first follow-up into that
    public placeholder, ephemeral flag or not, so the whole channel would see it. The placeholder is deleted
    first; the follow-up then arrives as a new, private message.
    """
    if not interaction.response.is_done():
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=SAFE_MENTIONS)
        return
    if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        original = await interaction.original_response()
        if original.flags.loading and not original.flags.ephemeral:
            await interaction.delete_original_response()
    await interaction.followup.send(message, ephemeral=True, allowed_mentions=SAFE_MENTIONS)


class CloneusBot(commands.Bot):
    """The bot. Cogs reach the services as `self.bot.store`, `.engine`, `.jobs`, `.registry`, `.settings`,
    `.youtube`.

    Args:
        settings (`Settings`): validated settings.
        store (`Store`): the open database.
        engine (`Engine`): the generation worker.
        jobs (`JobManager`): training jobs.
        registry (`ModelRegistry`): servable checkpoints.
        youtube (`YouTubeLinks`, *optional*): link encoder/decoder; None when no API key.
        extensions (`tuple[str, ...]`, *optional*, defaults to `EXTENSIONS`): cogs to load.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: Engine,
        jobs: JobManager,
        registry: ModelRegistry,
        youtube: Any = None,
        *,
        extensions: tuple[str, ...] = EXTENSIONS,
    ):
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            tree_cls=CloneusTree,
            allowed_mentions=SAFE_MENTIONS,
            help_command=None,
        )
        self.settings = settings
        self.store = store
        self.engine = engine
        self.jobs = jobs
        self.registry = registry
        self.youtube = youtube
        self.extension_names = extensions

    async def setup_hook(self) -> None:
        for name in self.extension_names:
            await self.load_extension(name)
        for guild_id in self.settings.guild_ids:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            logger.info("synced %d commands to guild %d", len(synced), guild_id)
        for channel_id in sorted(self.settings.channel_ids):
            await self.seed_context(channel_id)
        default = self.registry.default
        if default is None:
            logger.warning("no model registered in %s; /model switch or /admin train adds one", self.registry.path)
        elif not self.engine.status().loaded:
            self.engine.start_background_load(default)

    def serves(self, channel: discord.abc.GuildChannel | discord.Thread) -> bool:
        """Whether the bot serves `channel`: in a configured guild, and the configured channel if any (a thread
        counts as its parent channel)."""
        if channel.guild is None or channel.guild.id not in self.settings.guild_ids:
            return False
        channel_id = channel.parent_id if isinstance(channel, discord.Thread) else channel.id
        return not self.settings.channel_ids or channel_id in self.settings.channel_ids

    def watches(self, message: discord.Message) -> bool:
        """Whether `message` feeds the context: sent in a channel (or a thread of one) the bot serves."""
        return message.guild is not None and self.serves(message.channel)

    async def on_thread_create(self, thread: discord.Thread) -> None:
        """A thread in a served channel gets its own context (keyed by the thread's id), seeded with its starter
        message; the bot joins it, since Discord only sends a thread's messages to its members."""
        if not self.serves(thread):
            return
        try:
            await thread.join()
            starter = thread.starter_message
            if starter is None and thread.parent is not None:
                starter = await thread.parent.fetch_message(thread.id)  # a thread started from a message has its id
        except discord.NotFound:
            starter = None  # a thread not started from a message
        except discord.HTTPException as e:
            logger.warning("could not join or seed thread %d: %s", thread.id, e)
            return
        entry = self.context_entry(starter, live=False) if starter is not None else None
        if entry is not None:
            author, text, is_clone = entry
            await self.store.add_context(
                thread.id, starter.id, author, text, starter.created_at, is_clone, author_id=starter.author.id
            )
        logger.info("joined thread %d of channel %d", thread.id, thread.parent_id)

    def context_entry(self, message: discord.Message, *, live: bool) -> tuple[str, str, bool] | None:
        """`(author, text, is_clone)` for the context, or None for messages the context skips.

        A member's message is stored as an export holds it: the raw content (`<@id>`, `<:emoji:id>`) followed by
        attachment URLs, joined as the DiscordChatExporter reader joins them, under the display name (nickname)
        an export carries. Nothing is cleaned here: `ReplyService.history` normalises what it reads back with
        the served checkpoint's own rules, the ones its training data went through.

        The bot's own clone replies count as the cloned author. Live, they are skipped here: the cog that posted
        one stores its final text itself (the MESSAGE_CREATE of a streamed reply carries only its first words).
        Other bot messages (status, progress, errors) are never context.
        """
        author = message.author
        text = "\n".join([message.content, *(a.url for a in message.attachments)]).strip("\n")
        if self.user is not None and author.id == self.user.id:
            parsed = None if live else parse_clone_reply(text)
            return (*parsed, True) if parsed else None
        if message.webhook_id is not None and author.name.endswith(CLONE_WEBHOOK_SUFFIX):
            return None if live else (author.name[: -len(CLONE_WEBHOOK_SUFFIX)], text, True)
        if message.type not in (discord.MessageType.default, discord.MessageType.reply) or not text:
            return None
        return author.display_name, text, False

    async def seed_context(self, channel_id: int) -> int:
        """Store the channel's last `history_seed_n` messages as context (ids already stored are updated)."""
        if self.settings.history_seed_n == 0:
            return 0
        try:
            channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
            messages = [m async for m in channel.history(limit=self.settings.history_seed_n, oldest_first=False)]
        except discord.HTTPException as e:
            logger.warning("could not read the history of channel %d to seed the context: %s", channel_id, e)
            return 0
        count = 0
        for message in reversed(messages):
            entry = self.context_entry(message, live=False)
            if entry is not None:
                author, text, is_clone = entry
                await self.store.add_context(
                    channel_id, message.id, author, text, message.created_at, is_clone, author_id=message.author.id
                )
                count += 1
        logger.info("seeded the context of channel %d with %d messages", channel_id, count)
        return count

    async def on_message(self, message: discord.Message) -> None:
        if not self.watches(message):
            return
        entry = self.context_entry(message, live=True)
        if entry is None:
            return
        author, text, is_clone = entry
        await self.store.add_context(
            message.channel.id, message.id, author, text, message.created_at, is_clone, author_id=message.author.id
        )

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        if self.watches(message) and (entry := self.context_entry(message, live=True)):
            await self.store.update_context_text(message.channel.id, message.id, entry[1])

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.store.delete_context_message(payload.channel_id, payload.message_id)
