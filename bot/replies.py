"""Posting clone replies: stream generated text into Discord, remember it, regenerate or delete it later.

A reply can land in three places: the deferred response of a slash command, a plain channel message
(auto-reply, regenerate), or a channel webhook that shows the member's name + " (clone)" and avatar. A `Target`
hides which: two coroutines (send a new message, edit one) and whether the text carries the `**[Name]**` prefix
(a webhook shows the name itself). `ReplyService.stream` pushes the engine's deltas into a `StreamEditor`
(throttled edits, 2000-character split), decodes YouTube tags in the final text off the event loop, and returns
the messages. `remember` stores the reply (for 🔁, 👍/👎, 🗑️) and puts it in the channel context under the
cloned author, so the next generation sees what the clone said.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import discord

from bot.engine import EngineLoading, EngineNotLoaded
from bot.render import (
    SAFE_MENTIONS,
    ZERO_SHOT_MARK,
    StreamEditor,
    format_clone_reply,
    render_emoji,
    render_mentions,
)
from cloneus.data.normalize import Turn
from cloneus.errors import CloneusError

if TYPE_CHECKING:
    from bot.client import CloneusBot
    from bot.store import CloneReply, ContextMessage
    from cloneus import Cloneus

logger = logging.getLogger(__name__)

WEBHOOK_NAME = "CloneUs"
CLONE_SUFFIX = " (clone)"

History = list[tuple[str, str]]


@dataclass
class Target:
    """Where a reply goes.

    Args:
        send (`Callable[[str], Awaitable[Any]]`): posts a new message, returns it.
        edit (`Callable[[Any, str], Awaitable[Any]]`): replaces a posted message's content.
        first (`Any`, *optional*): an existing message that receives the first piece (a deferred response).
        prefix (`bool`, *optional*, defaults to `True`): start the text with `**[Name]**`.
        webhook_id (`int`, *optional*): set when the messages belong to a channel webhook.
    """

    send: Callable[[str], Awaitable[Any]]
    edit: Callable[[Any, str], Awaitable[Any]]
    first: Any | None = None
    prefix: bool = True
    webhook_id: int | None = None


def find_member(guild: discord.Guild | None, name: str) -> discord.Member | None:
    """The member whose display name, global name or username is `name` (case-insensitive)."""
    if guild is None:
        return None
    folded = name.casefold()
    for member in guild.members:
        names = (member.display_name, member.global_name, member.name)
        if any(n and n.casefold() == folded for n in names):
            return member
    return None


def context_turn(message: ContextMessage, guild: discord.Guild | None) -> Turn:
    """A stored context row as a history turn; a member's bot flag comes from the guild (bots are dropped)."""
    if message.is_clone or message.author_id is None:  # clone replies: the cloned author, by name
        return Turn(message.author, message.text, message.created_at)
    member = guild.get_member(message.author_id) if guild is not None else None
    is_bot = member is not None and member.bot
    return Turn(message.author, message.text, message.created_at, str(message.author_id), is_bot)


async def _edit(message: discord.Message | discord.PartialMessage, content: str) -> None:
    await message.edit(content=content, allowed_mentions=SAFE_MENTIONS)


class ReplyService:
    """Clone-reply plumbing shared by `/clone`, auto-reply, the Regenerate menu and reactions.

    Args:
        bot (`CloneusBot`): gives the store, engine, settings and the optional YouTube links.
    """

    def __init__(self, bot: CloneusBot):
        self.bot = bot
        self._webhooks: dict[int, discord.Webhook] = {}

    async def history(
        self, channel_id: int, guild: discord.Guild | None, latest: discord.Message | None = None
    ) -> History:
        """The channel's last `ctx_limit` messages as the model reads them: `(author, text)`, oldest first.

        They are normalised by the served checkpoint's own rules and user index (`Cloneus.normalize_history`),
        exactly as its training data was: commands, bots and opted-out users dropped, bursts merged, names
        resolved to the index, YouTube links tagged. `/clone context show` shows this.

        Args:
            latest (`discord.Message`, *optional*): a message to end with, whether or not it is stored yet.

        Raises:
            `EngineLoading` / `EngineNotLoaded`: no model, so no rules to read the context with.
        """
        model = self._model()
        rows = await self.bot.store.recent_context(channel_id, self.bot.settings.ctx_limit)
        turns = [context_turn(m, guild) for m in rows if latest is None or m.message_id != latest.id]
        if latest is not None and (entry := self.bot.context_entry(latest, live=True)):
            turns.append(Turn(entry[0], entry[1], latest.created_at, str(latest.author.id), latest.author.bot))
        names = {str(m.id): m.display_name for m in guild.members} if guild is not None else {}
        turns = turns[-self.bot.settings.ctx_limit :]
        normalised = await asyncio.to_thread(model.normalize_history, turns, names, self.bot.youtube)
        return [(t.author, t.text) for t in normalised]

    async def is_context(self, message: discord.Message) -> bool:
        """Whether the served checkpoint's rules keep `message` (a `!command`, a bot's or an opted-out member's
        message, or one empty after cleaning is not context, as it was not training data).

        Raises:
            `EngineLoading` / `EngineNotLoaded`: no model loaded.
        """
        entry = self.bot.context_entry(message, live=True)
        if entry is None:
            return False
        turn = Turn(entry[0], entry[1], message.created_at, str(message.author.id), message.author.bot)
        return bool(await asyncio.to_thread(self._model().normalize_history, [turn]))

    def _model(self) -> Cloneus:
        model = self.bot.engine.model
        if model is None or not model.loaded:
            eta = self.bot.engine.loading_eta()
            raise EngineLoading(eta) if eta is not None else EngineNotLoaded("no model is loaded to read the context")
        return model

    async def encode_history(self, history: History) -> History:
        """YouTube links in the context become metadata tags, as in training (no-op without a key); the tags of
        a normalised history stay as they are, links in replies added since become tags."""
        if self.bot.youtube is None or not history:
            return history
        texts = await asyncio.to_thread(self.bot.youtube.encode_texts, [text for _, text in history])
        return [(author, text) for (author, _), text in zip(history, texts, strict=True)]

    def renderer(
        self, guild: discord.Guild | None, author: str, prefix: bool, zero_shot: bool = False
    ) -> Callable[[str], str]:
        """Model text → Discord text: `@Name` of present members → mentions, `:emoji:` → guild emoji, prefix
        (and the zero-shot mark, shown even without the prefix)."""
        members: dict[str, int] = {}
        emojis: dict[str, str] = {}
        if guild is not None:
            for member in guild.members:
                members.update({n: member.id for n in (member.name, member.global_name, member.display_name) if n})
            emojis = {e.name: str(e) for e in guild.emojis}

        def render(text: str) -> str:
            text = render_emoji(render_mentions(text, members), emojis)
            if prefix:
                return format_clone_reply(author, text, zero_shot)
            return ZERO_SHOT_MARK + text if zero_shot else text

        return render

    def interaction_target(self, interaction: discord.Interaction, first: discord.InteractionMessage) -> Target:
        async def send(content: str) -> discord.WebhookMessage:
            return await interaction.followup.send(content, allowed_mentions=SAFE_MENTIONS, wait=True)

        return Target(send=send, edit=_edit, first=first)

    def channel_target(self, channel: discord.abc.Messageable, first: Any | None = None) -> Target:
        async def send(content: str) -> discord.Message:
            return await channel.send(content, allowed_mentions=SAFE_MENTIONS)

        return Target(send=send, edit=_edit, first=first)

    async def webhook(self, channel: discord.TextChannel) -> discord.Webhook:
        """The bot's webhook in `channel`, created on first use (needs Manage Webhooks)."""
        if channel.id in self._webhooks:
            return self._webhooks[channel.id]
        try:
            hooks = await channel.webhooks()
            me = self.bot.user.id if self.bot.user else None
            hook = next((h for h in hooks if h.token and h.user and h.user.id == me), None)
            hook = hook or await channel.create_webhook(name=WEBHOOK_NAME, reason="CloneUs clone replies")
        except discord.Forbidden:
            raise CloneusError(
                "webhook posting needs the Manage Webhooks permission; /sampling set webhook off"
            ) from None
        self._webhooks[channel.id] = hook
        return hook

    async def webhook_target(self, channel: discord.TextChannel, author: str, first: Any | None = None) -> Target:
        """Post as `<display name> (clone)` with the member's avatar when the author is a present member."""
        hook = await self.webhook(channel)
        member = find_member(channel.guild, author)
        username = (member.display_name if member else author)[: 80 - len(CLONE_SUFFIX)] + CLONE_SUFFIX
        avatar = member.display_avatar.url if member else None

        async def send(content: str) -> discord.WebhookMessage:
            nonlocal hook
            options = {"username": username, "avatar_url": avatar, "allowed_mentions": SAFE_MENTIONS, "wait": True}
            try:
                return await hook.send(content, **options)
            except discord.NotFound:  # someone deleted the webhook in the channel settings: make a new one
                self._webhooks.pop(channel.id, None)
                hook = await self.webhook(channel)
                return await hook.send(content, **options)

        async def edit(message: Any, content: str) -> None:
            await hook.edit_message(message.id, content=content, allowed_mentions=SAFE_MENTIONS)

        return Target(send=send, edit=edit, first=first, prefix=False, webhook_id=hook.id)

    async def stream(
        self,
        target: Target,
        guild: discord.Guild | None,
        history: History,
        author: str,
        seed_text: str | None,
        sampling: dict[str, Any],
        *,
        zero_shot: bool = False,
    ) -> tuple[str, list[Any]]:
        """Generate as `author` into `target`; returns the final (YouTube-decoded) text and the messages.
        `zero_shot`: `author` is a name the model's index does not know, and the reply is marked so."""
        editor = self.editor(target, guild, author, zero_shot)
        encoded = await self.encode_history(history)
        stream = self.bot.engine.stream(encoded, author, seed_text=seed_text, sampling=sampling, new_author=zero_shot)
        async for delta in stream:
            await editor.push(delta)
        return await self.finish(editor, editor.text)

    def editor(self, target: Target, guild: discord.Guild | None, author: str, zero_shot: bool = False):
        """A `StreamEditor` writing `author`'s reply into `target`."""
        render = self.renderer(guild, author, target.prefix, zero_shot)
        return StreamEditor(target.send, target.edit, first=target.first, render=render)

    async def finish(self, editor: StreamEditor, text: str) -> tuple[str, list[Any]]:
        """Decode YouTube tags in the final text (off the event loop) and land it; returns it and the messages."""
        if self.bot.youtube is not None:
            text = await asyncio.to_thread(self.bot.youtube.decode, text)
        return text, await editor.finish(text)

    async def remember(
        self,
        channel_id: int,
        messages: list[Any],
        author: str,
        text: str,
        invoker_id: int,
        request: dict[str, Any],
        webhook_id: int | None = None,
    ) -> None:
        """Record the reply (for regenerate/feedback/delete) and add it to the context as the cloned author."""
        message_id = messages[0].id
        request = request | {"text": text, "message_ids": [m.id for m in messages], "webhook_id": webhook_id}
        await self.bot.store.record_reply(message_id, channel_id, author, invoker_id, request)
        await self.bot.store.add_context(
            channel_id, message_id, author, text, datetime.now(timezone.utc), is_clone=True
        )

    async def interaction_reply_target(
        self, interaction: discord.Interaction, webhook: bool, first_turn: bool, author: str
    ) -> Target:
        """Where a reply goes: the webhook, the deferred response (first turn), or a new follow-up."""
        if webhook:
            return await self.webhook_target(interaction.channel, author)
        if first_turn:
            return self.interaction_target(interaction, await interaction.original_response())
        return self.interaction_target(interaction, None)

    async def post(
        self,
        interaction: discord.Interaction,
        webhook: bool,
        first_turn: bool,
        history: list[tuple[str, str]],
        author: str,
        seed_text: str | None,
        sampling: dict[str, Any],
        zero_shot: bool = False,
    ) -> str:
        """Generate one reply to a slash command into the channel (the deferred response for the first
        non-webhook turn) and remember it; returns its text."""
        target = await self.interaction_reply_target(interaction, webhook, first_turn, author)
        text, messages = await self.stream(
            target, interaction.guild, history, author, seed_text, sampling, zero_shot=zero_shot
        )
        request = {"history": history, "author": author, "seed_text": seed_text, "sampling": sampling}
        if zero_shot:
            request["zero_shot"] = True
        await self.remember(
            interaction.channel_id, messages, author, text, interaction.user.id, request, target.webhook_id
        )
        return text

    async def post_batch(
        self,
        interaction: discord.Interaction,
        webhook: bool,
        history: list[tuple[str, str]],
        authors: list[str],
        seed_text: str | None,
        sampling: dict[str, Any],
    ) -> None:
        """One reply per author to the same history, generated as one batch, each streaming into its own message
        (posted at once, in the authors' order, so the replies stay in that order whichever grows first). The
        deferred response gets its placeholder first: Discord would turn the first follow-up into it otherwise."""
        editors = []
        for i, author in enumerate(authors):
            target = await self.interaction_reply_target(interaction, webhook, i == 0, author)
            placeholder = self.renderer(interaction.guild, author, target.prefix)("") or "…"
            if target.first is None:
                target = replace(target, first=await target.send(placeholder))
            else:
                await target.edit(target.first, placeholder)
            editors.append((target, self.editor(target, interaction.guild, author)))
        encoded = await self.encode_history(history)
        async for row, delta in self.bot.engine.stream_batch(encoded, authors, seed_text, sampling):
            await editors[row][1].push(delta)
        for author, (target, editor) in zip(authors, editors, strict=True):
            text, messages = await self.finish(editor, editor.text)
            request = {"history": history, "author": author, "seed_text": seed_text, "sampling": sampling}
            await self.remember(
                interaction.channel_id, messages, author, text, interaction.user.id, request, target.webhook_id
            )

    async def _hook_for(self, channel: discord.abc.GuildChannel, webhook_id: int) -> discord.Webhook:
        hook = self._webhooks.get(channel.id)
        if hook is None or hook.id != webhook_id:
            hook = await self.webhook(channel)
        return hook

    async def regenerate(self, channel: discord.TextChannel, reply: CloneReply) -> str:
        """Generate a fresh reply for the same request (a new seed) into the same message(s)."""
        request = reply.request
        sampling = {k: v for k, v in request.get("sampling", {}).items() if k != "seed"}
        history = [(a, t) for a, t in request.get("history", [])]
        ids = request.get("message_ids") or [reply.message_id]
        webhook_id = request.get("webhook_id")
        if webhook_id:
            hook = await self._hook_for(channel, webhook_id)
            target = await self.webhook_target(channel, reply.author, first=discord.Object(id=ids[0]))
            drop: Callable[[int], Awaitable[None]] = hook.delete_message
        else:
            target = self.channel_target(channel, first=channel.get_partial_message(ids[0]))

            async def drop(message_id: int) -> None:
                await channel.get_partial_message(message_id).delete()

        for extra in ids[1:]:
            await drop(extra)
        text, messages = await self.stream(
            target,
            channel.guild,
            history,
            reply.author,
            request.get("seed_text"),
            sampling,
            zero_shot=bool(request.get("zero_shot")),
        )
        await self.bot.store.record_reply(
            reply.message_id,
            reply.channel_id,
            reply.author,
            reply.invoker_id,
            request | {"text": text, "message_ids": [m.id for m in messages]},
        )
        await self.bot.store.update_context_text(reply.channel_id, reply.message_id, text)
        return text

    async def delete(self, channel: discord.TextChannel, reply: CloneReply) -> None:
        """Delete a clone reply's message(s) and forget it (context row and record)."""
        ids = reply.request.get("message_ids") or [reply.message_id]
        webhook_id = reply.request.get("webhook_id")
        for message_id in ids:
            try:
                if webhook_id:
                    await (await self._hook_for(channel, webhook_id)).delete_message(message_id)
                else:
                    await channel.get_partial_message(message_id).delete()
            except discord.NotFound:
                logger.info("reply message %d was already deleted", message_id)
        await self.bot.store.delete_reply(reply.message_id)
        await self.bot.store.delete_context_message(reply.channel_id, reply.message_id)
