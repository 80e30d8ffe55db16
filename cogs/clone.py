"""`/clone`: talk to the clones — speak, auto, sayas, context, opt out/in — plus auto-reply and reply reactions.

Consent is checked twice: the model's user index refuses excluded and opted-out users (`UnknownAuthorError`),
and the store's opt-out list (set by `/clone optout`, newer than any trained checkpoint) refuses the rest.
Generation commands share one per-user cooldown (`CLONE_COOLDOWN_S`), enforced in `interaction_check`.
A reply's request is stored with it, so 🔁 and the "Regenerate" menu re-run it with a new seed, and 👍/👎 keep
the context it answered for preference tuning later.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.engine import EngineLoading, EngineNotLoaded
from bot.render import SAFE_MENTIONS, format_clone_reply, split_message
from bot.replies import ReplyService, find_member
from cloneus.errors import CloneusError, UnknownAuthorError
from cogs.admin import is_admin
from cogs.sampling import autoreply_mode, request_sampling

if TYPE_CHECKING:
    from bot.client import CloneusBot

logger = logging.getLogger(__name__)

COOLDOWN_COMMANDS = frozenset({"speak", "auto"})
AUTOCOMPLETE_LIMIT = 25
MAX_TURNS = 10
REGENERATE, THUMBS_UP, THUMBS_DOWN, WASTEBASKET = "🔁", "👍", "👎", "🗑️"
FEEDBACK = {THUMBS_UP: 1, THUMBS_DOWN: -1}


class CloneCog(commands.GroupCog, group_name="clone", group_description="Talk to the chat clones"):
    """Clone replies on demand, on auto-reply, and their regenerate/feedback/delete reactions."""

    context = app_commands.Group(name="context", description="What the clones remember of this channel")

    def __init__(self, bot: CloneusBot):
        self.bot = bot
        self.replies = ReplyService(bot)
        self._last_use: dict[int, float] = {}
        self.regenerate_menu = app_commands.ContextMenu(name="Regenerate", callback=self.regenerate_from_menu)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.regenerate_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.regenerate_menu.name, type=self.regenerate_menu.type)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """The per-user cooldown shared by the generating commands (expired entries are dropped, so it stays
        as small as the set of members who generated in the last `clone_cooldown_s`). The slot is taken here,
        so two requests sent at once cannot both pass, and given back by `cog_app_command_error` when the
        command fails: only a command that generates counts, never a refusal."""
        per = self.bot.settings.clone_cooldown_s
        if per <= 0 or interaction.command is None or interaction.command.name not in COOLDOWN_COMMANDS:
            return True
        now = time.monotonic()
        self._last_use = {uid: t for uid, t in self._last_use.items() if now - t < per}
        last = self._last_use.get(interaction.user.id)
        if last is not None:
            raise app_commands.CommandOnCooldown(app_commands.Cooldown(1, per), per - (now - last))
        self._last_use[interaction.user.id] = now
        return True

    async def cog_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError):
        """A command that failed (unknown author, bad option, model loading or busy) generated nothing: give
        back the cooldown slot it took. The tree's `on_error` still tells the user why."""
        command = interaction.command
        if command is not None and command.name in COOLDOWN_COMMANDS:
            if not isinstance(error, app_commands.CommandOnCooldown):  # else the slot is an earlier command's
                self._last_use.pop(interaction.user.id, None)

    # -- helpers -------------------------------------------------------------------------------------------------

    async def resolve_author(self, guild: discord.Guild | None, name: str) -> str:
        """The model's spelling of `name`, refusing unknown, excluded and opted-out members.

        Raises:
            `UnknownAuthorError`: not someone the loaded model can speak as, or opted out.
            `EngineLoading` / `EngineNotLoaded`: no model to ask yet.
        """
        model = self.bot.engine.model
        if model is None or not model.loaded:
            eta = self.bot.engine.loading_eta()
            if eta is not None:
                raise EngineLoading(eta)
            raise EngineNotLoaded("no model is loaded; an admin can load one with /model switch")
        user = model.users.resolve(name)
        opted_out = await self.bot.store.opted_out_ids()
        member = find_member(guild, user.display_name) or find_member(guild, user.username)
        if str(user.id) in {str(i) for i in opted_out} or (member is not None and member.id in opted_out):
            raise UnknownAuthorError(f"{user.display_name} opted out of being cloned")
        return user.display_name

    async def _author_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        names = [n for n in self.bot.engine.authors if current.casefold() in n.casefold()]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_LIMIT]]

    async def _preset_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        from cloneus.inference.sampling import load_presets

        names = [n for n in sorted(load_presets()) if current.lower() in n]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_LIMIT]]

    async def _uses_webhook(self, channel_id: int) -> bool:
        return bool((await self.bot.store.get_channel_settings(channel_id)).get("webhook"))

    async def _post(
        self,
        interaction: discord.Interaction,
        webhook: bool,
        first_turn: bool,
        history: list[tuple[str, str]],
        author: str,
        seed_text: str | None,
        sampling: dict[str, Any],
    ) -> str:
        """Generate one reply into the channel (the deferred response for the first non-webhook turn)."""
        if webhook:
            target = await self.replies.webhook_target(interaction.channel, author)
        elif first_turn:
            target = self.replies.interaction_target(interaction, await interaction.original_response())
        else:
            target = self.replies.interaction_target(interaction, None)
        text, messages = await self.replies.stream(target, interaction.guild, history, author, seed_text, sampling)
        request = {"history": history, "author": author, "seed_text": seed_text, "sampling": sampling}
        await self.replies.remember(
            interaction.channel_id, messages, author, text, interaction.user.id, request, target.webhook_id
        )
        return text

    # -- commands ------------------------------------------------------------------------------------------------

    @app_commands.command(name="speak")
    @app_commands.describe(
        author="Who to speak as",
        seed="Text the reply starts with",
        preset="A sampling preset instead of the channel's",
        temperature="Lower is more conservative",
        top_p="Nucleus sampling mass",
        top_k="Keep the k most likely tokens (0 = off)",
        min_p="Drop tokens below min_p × top probability",
        repetition_penalty="Penalise repeated tokens (1 = off)",
        max_new_tokens="Longest reply in tokens",
        dynamic_temperature="Entropy-scaled temperature",
        mirostat="Mirostat v2 sampling",
        xtc_probability="XTC: chance to drop the top choices",
        dry_multiplier="DRY repetition penalty strength (0 = off)",
    )
    @app_commands.autocomplete(author=_author_autocomplete, preset=_preset_autocomplete)
    async def speak(
        self,
        interaction: discord.Interaction,
        author: str,
        seed: str | None = None,
        preset: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        max_new_tokens: int | None = None,
        dynamic_temperature: bool | None = None,
        mirostat: bool | None = None,
        xtc_probability: float | None = None,
        dry_multiplier: float | None = None,
    ) -> None:
        """Reply as a member's clone, streamed into the channel."""
        # Checked before deferring (store reads, milliseconds), so a refusal is shown only to the invoker.
        name = await self.resolve_author(interaction.guild, author)
        overrides = {
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "min_p": min_p,
            "repetition_penalty": repetition_penalty,
            "max_new_tokens": max_new_tokens,
            "dynamic_temperature": dynamic_temperature,
            "mirostat_mode": None if mirostat is None else 2 * int(mirostat),
            "xtc_probability": xtc_probability,
            "dry_multiplier": dry_multiplier,
        }
        sampling = await request_sampling(self.bot.store, interaction.channel_id, overrides, preset)
        webhook = await self._uses_webhook(interaction.channel_id)
        await interaction.response.defer(thinking=True, ephemeral=webhook)
        history = await self.replies.history(interaction.channel_id, interaction.guild)
        await self._post(interaction, webhook, True, history, name, seed, sampling)
        if webhook:
            await interaction.edit_original_response(content=f"Posted as {name} (clone).")

    @app_commands.command(name="auto")
    @app_commands.describe(turns="How many replies (1-10)", mode="How the next speaker is picked")
    async def auto(
        self,
        interaction: discord.Interaction,
        turns: app_commands.Range[int, 1, MAX_TURNS] = 1,
        mode: Literal["weighted", "top", "uniform"] = "weighted",
    ) -> None:
        """Let the model pick who speaks next, then speak as them, for a few turns."""
        if not 1 <= turns <= MAX_TURNS:
            raise CloneusError(f"turns={turns}: choose between 1 and {MAX_TURNS}")
        sampling = await request_sampling(self.bot.store, interaction.channel_id)
        webhook = await self._uses_webhook(interaction.channel_id)
        await interaction.response.defer(thinking=True, ephemeral=webhook)
        history = await self.replies.history(interaction.channel_id, interaction.guild)
        spoken = []
        for turn in range(turns):
            author = await self._next_author(interaction.guild, history, mode)
            if author is None:
                break
            text = await self._post(interaction, webhook, turn == 0, history, author, None, sampling)
            history = [*history, (author, text)][-self.bot.settings.ctx_limit :]
            spoken.append(author)
        if webhook or not spoken:
            await interaction.edit_original_response(content=f"Spoke as: {', '.join(spoken) or 'nobody'}.")

    async def _next_author(self, guild: discord.Guild | None, history: list[tuple[str, str]], mode: str) -> str | None:
        """The model's pick; an opted-out pick is replaced by the likeliest member who may be cloned."""
        author = await self.bot.engine.predict_author(history, mode)
        if author is None:
            return None
        try:
            return await self.resolve_author(guild, author)
        except UnknownAuthorError:
            probabilities = await self.bot.engine.author_probabilities(history)
        for name in sorted(probabilities, key=probabilities.get, reverse=True):
            try:
                return await self.resolve_author(guild, name)
            except UnknownAuthorError:
                continue
        return None

    @app_commands.command(name="sayas")
    @app_commands.describe(author="Whose words these are", text="What they say")
    @app_commands.autocomplete(author=_author_autocomplete)
    async def sayas(self, interaction: discord.Interaction, author: str, text: str) -> None:
        """Add a message to the channel context as a member, without generating."""
        name = await self.resolve_author(interaction.guild, author)
        callback = await interaction.response.send_message(
            split_message(format_clone_reply(name, text))[0], allowed_mentions=SAFE_MENTIONS
        )
        await self.bot.store.add_context(
            interaction.channel_id, callback.message_id, name, text, datetime.now(timezone.utc), is_clone=True
        )

    @context.command(name="show")
    async def context_show(self, interaction: discord.Interaction) -> None:
        """Show the messages the clones see in this channel, as the model reads them."""
        history = await self.replies.history(interaction.channel_id, interaction.guild)
        if not history:
            await interaction.response.send_message("The context of this channel is empty.", ephemeral=True)
            return
        lines = "\n".join(f"{author}: {text}" for author, text in history)
        pieces = split_message(f"The {len(history)} messages the clones see, as the model reads them:\n{lines}")
        await interaction.response.send_message(pieces[0], ephemeral=True, allowed_mentions=SAFE_MENTIONS)
        for piece in pieces[1:]:
            await interaction.followup.send(piece, ephemeral=True, allowed_mentions=SAFE_MENTIONS)

    @context.command(name="clear")
    @app_commands.checks.has_permissions(manage_messages=True)
    async def context_clear(self, interaction: discord.Interaction) -> None:
        """Forget this channel's context (needs Manage Messages)."""
        await self.bot.store.clear_context(interaction.channel_id)
        await interaction.response.send_message("Context cleared; the clones start this channel afresh.")

    @app_commands.command(name="optout")
    async def optout(self, interaction: discord.Interaction) -> None:
        """Stop the bot from imitating you and erase what it stored about you."""
        user = interaction.user
        if user.id in await self.bot.store.opted_out_ids():
            await interaction.response.send_message(
                "You have already opted out; /clone optin undoes it.", ephemeral=True
            )
            return
        names = {user.name, user.display_name, *self._index_names(user.id)}
        await self.bot.store.set_opt_out(user.id, True, names=names)
        await interaction.response.send_message(
            "You're opted out: nobody can make your clone speak, your stored context, replies and feedback are "
            "erased, and you're left out of the next training run. /clone optin undoes it.",
            ephemeral=True,
        )

    @app_commands.command(name="optin")
    async def optin(self, interaction: discord.Interaction) -> None:
        """Allow the bot to imitate you again (from the next training run on)."""
        if interaction.user.id not in await self.bot.store.opted_out_ids():
            await interaction.response.send_message("You are not opted out; nothing to undo.", ephemeral=True)
            return
        await self.bot.store.set_opt_out(interaction.user.id, False)
        await interaction.response.send_message("You're opted back in. Welcome back!", ephemeral=True)

    def _index_names(self, user_id: int) -> set[str]:
        """The names the loaded model's index knows this Discord id by (clone replies are stored under them)."""
        model = self.bot.engine.model
        if model is None or not model.loaded:
            return set()
        return {n for u in model.users.users if str(u.id) == str(user_id) for n in (u.username, u.display_name)}

    # -- regenerate, reactions, auto-reply ----------------------------------------------------------------------

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
        if reply is None or not isinstance(channel, discord.TextChannel):
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

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Auto-reply: with `/sampling set autoreply always|lurk:<t>`, answer an organic message as the
        predicted next speaker (lurk stays silent unless someone is likely enough)."""
        if message.author.bot or message.webhook_id is not None or not self.bot.watches(message):
            return
        mode = autoreply_mode((await self.bot.store.get_channel_settings(message.channel.id)).get("autoreply"))
        if mode is None or self.bot.context_entry(message, live=True) is None:
            return
        try:
            # A message training would drop (`!skip`: how members speak past the bot) gets no reply either.
            if not await self.replies.is_context(message):
                return
            # The client's own on_message stores this message too; whichever ran first, it is in the history once.
            history = await self.replies.history(message.channel.id, message.guild, latest=message)
            author = await self._next_author(message.guild, history, mode)
            if author is None:
                return
            sampling = await request_sampling(self.bot.store, message.channel.id)
            target = self.replies.channel_target(message.channel)
            if await self._uses_webhook(message.channel.id):
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
    await bot.add_cog(CloneCog(bot))
