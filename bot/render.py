"""Discord-facing text: the 2000-character split, mentions and emoji both ways, throttled streaming edits.

Outgoing model text is untrusted: `@everyone`, role mentions and `<@id>` it makes up must never ping anyone. Two
layers guard this: `render_mentions` only turns `@Name` into a real mention for members actually present, and
every message is sent with `SAFE_MENTIONS` (users only, never everyone/here/roles), which Discord enforces
server-side whatever the text says.

Incoming messages go the other way in `cloneus.data.normalize`, the path training data took: `<@id>` becomes
`@Name` and `<:emoji:id>` becomes `:emoji:`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import discord

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000  # Discord's limit on a message's content, in characters
EDIT_DELAY_SECONDS = 1.0  # minimum gap between two edits of a streamed message (llmcord uses the same)
EMPTY_REPLY = "*(no reply)*"

SAFE_MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)

_EMOJI_OR_RENDERED = re.compile(r"<a?:\w+:\d+>|:(\w+):")
ZERO_SHOT_MARK = "*(zero-shot)* "
_CLONE_REPLY = re.compile(r"\*\*\[([^\]\n]+)\]\*\* (?:\*\(zero-shot\)\* )?(.*)", re.DOTALL)

T = TypeVar("T")


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split `text` into pieces of at most `limit` characters, at the last line break, else the last space,
    else (one unbroken run of characters) exactly at the limit. Joining the pieces with the separators they were
    split at gives back the text; no piece is empty unless `text` is.

    Args:
        text (`str`): the text to split.
        limit (`int`, *optional*, defaults to `2000`): maximum piece length.
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    pieces = []
    while len(text) > limit:
        window = text[: limit + 1]  # a separator right at the limit is still a clean split point
        cut = window.rfind("\n")
        if cut <= 0:
            cut = window.rfind(" ")
        if cut <= 0:
            pieces.append(text[:limit])
            text = text[limit:]
            continue
        pieces.append(text[:cut])
        text = text[cut + 1 :]
    if text or not pieces:
        pieces.append(text)
    return pieces


def render_mentions(text: str, members: Mapping[str, int]) -> str:
    """Turn `@Name` into `<@id>` for each name in `members` (case-insensitive, longest name first, only at a
    word end). Everything else stays text; `SAFE_MENTIONS` keeps it from pinging.

    Args:
        text (`str`): model output.
        members (`Mapping[str, int]`): display names and usernames of members present → their user ids.
    """
    if not members or "@" not in text:
        return text
    by_lower = {name.lower(): uid for name, uid in members.items() if name}
    names = sorted(by_lower, key=len, reverse=True)
    pattern = re.compile(r"@(" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.IGNORECASE)
    return pattern.sub(lambda m: f"<@{by_lower[m.group(1).lower()]}>", text)


def render_emoji(text: str, emojis: Mapping[str, str]) -> str:
    """Turn `:name:` into the guild emoji `emojis[name]` (e.g. `<:name:123>`); unknown names and emoji already
    in Discord form stay as they are.
    """
    if not emojis or ":" not in text:
        return text

    def replace(m: re.Match) -> str:
        name = m.group(1)
        return emojis.get(name, m.group(0)) if name else m.group(0)

    return _EMOJI_OR_RENDERED.sub(replace, text)


def format_clone_reply(author: str, text: str, zero_shot: bool = False) -> str:
    """The channel form of a clone reply: `**[Name]** text`, or `**[Name]** *(zero-shot)* text` for a name the
    model never saw speak."""
    return f"**[{author}]** {ZERO_SHOT_MARK if zero_shot else ''}{text}"


def parse_clone_reply(content: str) -> tuple[str, str] | None:
    """`(author, text)` from a message `format_clone_reply` wrote, or None for any other content."""
    match = _CLONE_REPLY.match(content)
    return (match.group(1), match.group(2)) if match else None


class StreamEditor(Generic[T]):
    """Show a growing text in Discord without exceeding the edit rate: edits at least `delay` seconds apart,
    overflow past the limit continued in follow-up messages, and a final flush that always lands the full text.

    The editor does not know whether it writes through an interaction, a webhook or a channel; the caller passes
    two coroutines. Text only grows while streaming; if `finish(text)` replaces it with something shorter, messages
    beyond the new last piece keep their old content (the caller deletes them if it must).

    Args:
        send (`Callable[[str], Awaitable[T]]`): posts a new message with this content and returns a handle.
        edit (`Callable[[T, str], Awaitable[Any]]`): replaces the content of a message posted before.
        first (`T`, *optional*): a message that already exists (e.g. a deferred interaction's original response)
            and receives the first piece by `edit`.
        render (`Callable[[str], str]`, *optional*): applied to the whole text before splitting, e.g. the
            clone-reply prefix and mention rendering (applied first, so the split sees the final length).
        limit (`int`, *optional*, defaults to `2000`): characters per message.
        delay (`float`, *optional*, defaults to `EDIT_DELAY_SECONDS`): minimum seconds between two flushes.
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[T]],
        edit: Callable[[T, str], Awaitable[Any]],
        *,
        first: T | None = None,
        render: Callable[[str], str] | None = None,
        limit: int = MESSAGE_LIMIT,
        delay: float = EDIT_DELAY_SECONDS,
    ):
        self._send = send
        self._edit = edit
        self._render = render or (lambda s: s)
        self.limit = limit
        self.delay = delay
        self.text = ""
        self.messages: list[T] = [first] if first is not None else []
        self._shown: list[str | None] = [None] * len(self.messages)
        self._last_flush = float("-inf")

    async def push(self, delta: str) -> None:
        """Append `delta`; flush if the last flush was at least `delay` seconds ago."""
        self.text += delta
        if time.monotonic() - self._last_flush >= self.delay:
            await self._flush()

    async def finish(self, text: str | None = None) -> list[T]:
        """Flush the complete text (replacing it first if `text` is given) and return the messages, in order."""
        if text is not None:
            self.text = text
        await self._flush(final=True)
        return list(self.messages)

    async def _flush(self, final: bool = False) -> None:
        rendered = self._render(self.text)
        if not rendered.strip():
            if not final:
                return
            rendered = EMPTY_REPLY
        self._last_flush = time.monotonic()
        for i, piece in enumerate(split_message(rendered, self.limit)):
            if i < len(self.messages):
                if self._shown[i] != piece:
                    await self._edit(self.messages[i], piece)
                    self._shown[i] = piece
            else:
                self.messages.append(await self._send(piece))
                self._shown.append(piece)
        self._last_flush = time.monotonic()
