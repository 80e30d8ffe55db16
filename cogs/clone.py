"""`/clone`: talk to the clones — speak (one, several, or a new name), scene, auto, ask the base model, sayas,
context, auto-reply opt-in, opt out/in. Reactions, the Regenerate menu and auto-reply are in `cogs/replies.py`.

Who may be spoken as is decided by `bot.speakers.Speakers` (the model's user index and the store's opt-outs).
Generation commands share one per-user cooldown (`CLONE_COOLDOWN_S`), taken in `interaction_check` and given
back when the command fails, so only a command that generates counts. A reply's request is stored with it, so 🔁
and the "Regenerate" menu re-run it with a new seed, and 👍/👎 keep the context it answered.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.pager import Pager, code_pages
from bot.render import SAFE_MENTIONS, StreamEditor, format_clone_reply, split_message
from bot.replies import ReplyService
from bot.speakers import Speakers, parse_names
from cloneus.errors import CloneusError
from cogs.sampling import request_sampling

if TYPE_CHECKING:
    from bot.client import CloneusBot

logger = logging.getLogger(__name__)

COOLDOWN_COMMANDS = frozenset({"speak", "auto", "scene", "ask"})
AUTOCOMPLETE_LIMIT = 25
MAX_TURNS = 10
BASE_CONTEXT_TURNS = 8  # the base model's chat is short: the last few user/assistant turns
ASK_MAX_NEW_TOKENS = 512
SAMPLING_DESCRIPTIONS = {
    "preset": "A sampling preset instead of the channel's",
    "temperature": "Lower is more conservative",
    "top_p": "Nucleus sampling mass",
    "top_k": "Keep the k most likely tokens (0 = off)",
    "min_p": "Drop tokens below min_p × top probability",
    "repetition_penalty": "Penalise repeated tokens (1 = off)",
    "max_new_tokens": "Longest reply in tokens",
    "dynamic_temperature": "Entropy-scaled temperature",
    "mirostat": "Mirostat v2 sampling",
    "xtc_probability": "XTC: chance to drop the top choices",
    "dry_multiplier": "DRY repetition penalty strength (0 = off)",
}


class CloneCog(commands.GroupCog, group_name="clone", group_description="Talk to the chat clones"):
    """Clone replies on demand, the base model, and the channel's context."""

    context = app_commands.Group(name="context", description="What the clones remember of this channel")

    def __init__(self, bot: CloneusBot):
        self.bot = bot
        self.replies = ReplyService(bot)
        self.speakers = Speakers(bot)
        self._last_use: dict[int, float] = {}

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

    async def _author_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        names = [n for n in self.bot.engine.authors if current.casefold() in n.casefold()]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_LIMIT]]

    async def _preset_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        from cloneus.inference.sampling import load_presets

        names = [n for n in sorted(load_presets()) if current.lower() in n]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_LIMIT]]

    async def _uses_webhook(self, interaction: discord.Interaction) -> bool:
        """Webhook posting, when the channel asks for it (a thread posts as the bot: webhooks are the parent's)."""
        if isinstance(interaction.channel, discord.Thread):
            return False
        return bool((await self.bot.store.get_channel_settings(interaction.channel_id)).get("webhook"))

    # -- commands ------------------------------------------------------------------------------------------------

    @app_commands.command(name="speak")
    @app_commands.describe(
        author="Who to speak as",
        authors="Several members, comma-separated: each answers the same context",
        new="Speak as a name the model never saw (zero-shot)",
        seed="Text the reply starts with",
        **SAMPLING_DESCRIPTIONS,
    )
    @app_commands.autocomplete(author=_author_autocomplete, preset=_preset_autocomplete)
    async def speak(
        self,
        interaction: discord.Interaction,
        author: str | None = None,
        authors: str | None = None,
        new: bool = False,
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
        """Reply as a member's clone (or several), streamed into the channel."""
        # Checked before deferring (store reads, milliseconds), so a refusal is shown only to the invoker.
        if (author is None) == (authors is None):
            raise CloneusError("name either author (one clone) or authors (several, comma-separated)")
        if new and authors is not None:
            raise CloneusError("new:true speaks as one new name; use it with author, not authors")
        zero_shot = False
        if authors is not None:
            names = await self.speakers.resolve_all(interaction.guild, parse_names(authors))
        elif new:
            name, zero_shot = await self.speakers.new_name(interaction.guild, author)
            names = [name]
        else:
            names = [await self.speakers.resolve(interaction.guild, author)]
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
        webhook = await self._uses_webhook(interaction)
        await interaction.response.defer(thinking=True, ephemeral=webhook)
        history = await self.replies.history(interaction.channel_id, interaction.guild)
        if len(names) > 1:
            await self.replies.post_batch(interaction, webhook, history, names, seed, sampling)
        else:
            await self.replies.post(interaction, webhook, True, history, names[0], seed, sampling, zero_shot)
        if webhook:
            await interaction.edit_original_response(content=f"Posted as {', '.join(names)} (clone).")

    @app_commands.command(name="scene")
    @app_commands.describe(
        authors="Who takes part, comma-separated, speaking in turn (default: the model picks each speaker)",
        turns=f"How many replies (1-{MAX_TURNS})",
    )
    async def scene(
        self,
        interaction: discord.Interaction,
        authors: str | None = None,
        turns: app_commands.Range[int, 1, MAX_TURNS] = 6,
    ) -> None:
        """A conversation between clones: each turn answers the ones before it."""
        if not 1 <= turns <= MAX_TURNS:
            raise CloneusError(f"turns={turns}: choose between 1 and {MAX_TURNS}")
        cast = await self.speakers.resolve_all(interaction.guild, parse_names(authors)) if authors else None
        await self._turns(interaction, turns, cast=cast)

    @app_commands.command(name="auto")
    @app_commands.describe(
        turns=f"How many replies (1-{MAX_TURNS})",
        mode="How the next speaker is picked (inverse favours quiet members)",
        authors="Only pick among these members, comma-separated",
        seed="Text the first reply starts with",
    )
    async def auto(
        self,
        interaction: discord.Interaction,
        turns: app_commands.Range[int, 1, MAX_TURNS] = 1,
        mode: Literal["weighted", "top", "uniform", "inverse"] = "weighted",
        authors: str | None = None,
        seed: str | None = None,
    ) -> None:
        """Let the model pick who speaks next, then speak as them, for a few turns."""
        if not 1 <= turns <= MAX_TURNS:
            raise CloneusError(f"turns={turns}: choose between 1 and {MAX_TURNS}")
        candidates = await self.speakers.resolve_all(interaction.guild, parse_names(authors)) if authors else None
        await self._turns(interaction, turns, mode=mode, candidates=candidates, seed_text=seed)

    async def _turns(
        self,
        interaction: discord.Interaction,
        turns: int,
        *,
        cast: list[str] | None = None,
        mode: str = "weighted",
        candidates: list[str] | None = None,
        seed_text: str | None = None,
    ) -> None:
        """`turns` replies, each seeing the ones before: `cast` in turn, else the model's pick (`mode`, among
        `candidates`)."""
        sampling = await request_sampling(self.bot.store, interaction.channel_id)
        webhook = await self._uses_webhook(interaction)
        await interaction.response.defer(thinking=True, ephemeral=webhook)
        history = await self.replies.history(interaction.channel_id, interaction.guild)
        spoken = []
        for turn in range(turns):
            if cast:
                author = cast[turn % len(cast)]
            else:
                author = await self.speakers.next_author(interaction.guild, history, mode, candidates)
            if author is None:
                break
            seed = seed_text if turn == 0 else None
            text = await self.replies.post(interaction, webhook, turn == 0, history, author, seed, sampling)
            history = [*history, (author, text)][-self.bot.settings.ctx_limit :]
            spoken.append(author)
        if webhook or not spoken:
            await interaction.edit_original_response(content=f"Spoke as: {', '.join(spoken) or 'nobody'}.")

    @app_commands.command(name="ask")
    @app_commands.describe(
        prompt="What to ask", system="A system message for the base model", max_new_tokens="Longest answer in tokens"
    )
    async def ask(
        self,
        interaction: discord.Interaction,
        prompt: str,
        system: str | None = None,
        max_new_tokens: app_commands.Range[int, 1, ASK_MAX_NEW_TOKENS] | None = None,
    ) -> None:
        """Ask the untuned base model (the adapter switched off); it keeps its own short chat in this channel."""
        self.speakers.require_model()
        if not prompt.strip():
            raise CloneusError("prompt is empty; ask something")
        if max_new_tokens is not None and not 1 <= max_new_tokens <= ASK_MAX_NEW_TOKENS:
            raise CloneusError(f"max_new_tokens={max_new_tokens}: choose between 1 and {ASK_MAX_NEW_TOKENS}")
        channel_id = interaction.channel_id
        earlier = await self.bot.store.recent_base_messages(channel_id, BASE_CONTEXT_TURNS)
        messages = [(m.role, m.text) for m in earlier] + [("user", prompt)]
        sampling = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
        await interaction.response.defer(thinking=True)
        target = self.replies.interaction_target(interaction, await interaction.original_response())
        editor = StreamEditor(target.send, target.edit, first=target.first)
        async for delta in self.bot.engine.base_stream(messages, system, sampling):
            await editor.push(delta)
        answer = editor.text
        await editor.finish(answer)
        await self.bot.store.add_base_message(channel_id, "user", prompt, interaction.user.id)
        await self.bot.store.add_base_message(channel_id, "assistant", answer, interaction.user.id)

    @app_commands.command(name="sayas")
    @app_commands.describe(author="Whose words these are", text="What they say")
    @app_commands.autocomplete(author=_author_autocomplete)
    async def sayas(self, interaction: discord.Interaction, author: str, text: str) -> None:
        """Add a message to the channel context as a member, without generating."""
        name = await self.speakers.resolve(interaction.guild, author)
        callback = await interaction.response.send_message(
            split_message(format_clone_reply(name, text))[0], allowed_mentions=SAFE_MENTIONS
        )
        await self.bot.store.add_context(
            interaction.channel_id, callback.message_id, name, text, datetime.now(timezone.utc), is_clone=True
        )

    @app_commands.command(name="autoreply")
    @app_commands.describe(state="on: clones may answer your messages where auto-reply is opted-in only")
    async def autoreply(self, interaction: discord.Interaction, state: Literal["on", "off"]) -> None:
        """Have clones answer your messages in channels whose auto-reply trigger is opted-in."""
        if interaction.guild_id is None:
            raise CloneusError("auto-reply is per server; use this in a server channel")
        await self.bot.store.set_autoreply_optin(interaction.guild_id, interaction.user.id, state == "on")
        if state == "on":
            text = "Clones may now answer your messages in channels with `autoreply_trigger` opted-in."
        else:
            text = "Clones no longer answer your messages on their own (other triggers still apply)."
        await interaction.response.send_message(text, ephemeral=True)

    # -- context -------------------------------------------------------------------------------------------------

    @context.command(name="show")
    @app_commands.describe(
        raw="Page through the exact prompt text the model reads", author="Whose reply the raw prompt is for"
    )
    @app_commands.autocomplete(author=_author_autocomplete)
    async def context_show(self, interaction: discord.Interaction, raw: bool = False, author: str | None = None):
        """Show the messages the clones see in this channel, as the model reads them (only to you)."""
        if raw:
            await self._show_raw(interaction, author)
            return
        if author is not None:
            raise CloneusError("author only applies with raw:true")
        history = await self.replies.history(interaction.channel_id, interaction.guild)
        if not history:
            await interaction.response.send_message("The context of this channel is empty.", ephemeral=True)
            return
        lines = "\n".join(f"{author}: {text}" for author, text in history)
        pieces = split_message(f"What the clones see here, as the model reads it (turns: {len(history)}):\n{lines}")
        await interaction.response.send_message(pieces[0], ephemeral=True, allowed_mentions=SAFE_MENTIONS)
        for piece in pieces[1:]:
            await interaction.followup.send(piece, ephemeral=True, allowed_mentions=SAFE_MENTIONS)

    async def _show_raw(self, interaction: discord.Interaction, author: str | None) -> None:
        if author is not None:
            name = await self.speakers.resolve(interaction.guild, author)
        else:
            self.speakers.require_model()
            name = next(iter(self.bot.engine.authors), None)
            if name is None:
                raise CloneusError("the loaded model has nobody to speak as")
        sampling = await request_sampling(self.bot.store, interaction.channel_id)
        history = await self.replies.encode_history(
            await self.replies.history(interaction.channel_id, interaction.guild)
        )
        prompt = await self.bot.engine.prompt_text(history, name, sampling)
        pager = Pager(code_pages(prompt), interaction.user.id)
        await interaction.response.send_message(
            pager.content(), view=pager, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    @context.command(name="clear")
    @app_commands.describe(which="clones: the clone context, base: the /clone ask chat, all: both")
    @app_commands.checks.has_permissions(manage_messages=True)
    async def context_clear(
        self, interaction: discord.Interaction, which: Literal["clones", "base", "all"] = "clones"
    ) -> None:
        """Forget this channel's context (needs Manage Messages); /clone context restore undoes it."""
        channel_id = interaction.channel_id
        cleared = []
        if which in ("clones", "all"):
            cleared.append(f"{await self.bot.store.clear_context(channel_id)} clone-context messages")
        if which in ("base", "all"):
            cleared.append(f"{await self.bot.store.clear_base_context(channel_id)} base-model turns")
        await interaction.response.send_message(
            f"Context cleared ({' and '.join(cleared)}); the clones start this channel afresh. "
            "/clone context restore undoes it."
        )

    @context.command(name="restore")
    @app_commands.checks.has_permissions(manage_messages=True)
    async def context_restore(self, interaction: discord.Interaction) -> None:
        """Undo the last /clone context clear of this channel (needs Manage Messages)."""
        restored = await self.bot.store.restore_context(interaction.channel_id)
        if not any(restored.values()):
            raise CloneusError("nothing to restore: the context of this channel was not cleared since")
        await interaction.response.send_message(
            f"Restored {restored['context']} clone-context messages and {restored['base_context']} base-model turns."
        )

    # -- consent -------------------------------------------------------------------------------------------------

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


async def setup(bot: CloneusBot) -> None:
    await bot.add_cog(CloneCog(bot))
