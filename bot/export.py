"""Channel history → DiscordChatExporter JSON, and the user index built from those exports.

`/admin export` writes `data/chat/<guild>-<channel>.json` in the layout DiscordChatExporter (DCE) produces, so the
data pipeline's reader takes it like any export an admin made by hand. Re-running an export reads the existing
file, asks Discord only for messages after the newest one it holds (snowflakes grow with time) and writes the
merged file atomically: a crash part-way leaves the previous export intact, and nothing is fetched twice.

Message `content` is kept raw (`<@id>`, `<:name:id>`); the `mentions` list carries the names, and the cleaning
step turns both into `@Name` / `:name:`, exactly as it does for a DCE export.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from cloneus.errors import CloneusError, DataFormatError
from cloneus.io import atomic_write_json

if TYPE_CHECKING:
    from cloneus.data.users import UserIndex

logger = logging.getLogger(__name__)

PROGRESS_EVERY_MESSAGES = 500

# discord.py's message types → DCE's `MessageKind` names; any other type becomes its CamelCase name.
DCE_KINDS = {
    discord.MessageType.default: "Default",
    discord.MessageType.reply: "Reply",
    discord.MessageType.pins_add: "ChannelPinnedMessage",
    discord.MessageType.new_member: "GuildMemberJoin",
    discord.MessageType.thread_created: "ThreadCreated",
    discord.MessageType.call: "Call",
    discord.MessageType.channel_name_change: "ChannelNameChange",
    discord.MessageType.channel_icon_change: "ChannelIconChange",
    discord.MessageType.recipient_add: "RecipientAdd",
    discord.MessageType.recipient_remove: "RecipientRemove",
}


@dataclass(frozen=True)
class ExportResult:
    """What one export run did.

    Args:
        path (`Path`): the export file.
        added (`int`): messages fetched and appended by this run.
        total (`int`): messages in the file now.
    """

    path: Path
    added: int
    total: int


def export_path(chat_dir: str | Path, guild_id: int, channel_id: int) -> Path:
    """Where the export of one channel lives: `<chat_dir>/<guild>-<channel>.json`."""
    return Path(chat_dir) / f"{guild_id}-{channel_id}.json"


def _timestamp(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds") if dt else None


def _user(user: discord.abc.User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "name": user.name,
        "discriminator": user.discriminator.zfill(4),
        "nickname": user.display_name,
        "isBot": user.bot,
    }


def message_to_dce(message: discord.Message) -> dict[str, Any]:
    """One message in DCE's JSON layout (the fields the readers use, plus attachments, reactions and pins)."""
    kind = DCE_KINDS.get(message.type) or message.type.name.title().replace("_", "")
    roles = message.author.roles if isinstance(message.author, discord.Member) else []
    author = _user(message.author) | {
        "color": None,
        "roles": [{"id": str(r.id), "name": r.name} for r in roles[1:]],  # roles[0] is @everyone
        "avatarUrl": message.author.display_avatar.url,
    }
    out: dict[str, Any] = {
        "id": str(message.id),
        "type": kind,
        "timestamp": _timestamp(message.created_at),
        "timestampEdited": _timestamp(message.edited_at),
        "callEndedTimestamp": None,
        "isPinned": message.pinned,
        "content": message.content,
        "author": author,
        "attachments": [
            {"id": str(a.id), "url": a.url, "fileName": a.filename, "fileSizeBytes": a.size}
            for a in message.attachments
        ],
        "embeds": [],
        "stickers": [],
        "reactions": [{"emoji": {"name": str(r.emoji)}, "count": r.count} for r in message.reactions],
        "mentions": [_user(u) for u in message.mentions],
    }
    if message.reference is not None and message.reference.message_id is not None:
        out["reference"] = {
            "messageId": str(message.reference.message_id),
            "channelId": str(message.reference.channel_id),
            "guildId": str(message.reference.guild_id) if message.reference.guild_id else None,
        }
    return out


def read_export(path: Path) -> dict[str, Any] | None:
    """Load an existing export, or None when there is none yet.

    Raises:
        `DataFormatError`: the file exists but is not a DCE JSON export (so it is never silently overwritten).
    """
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        message = f"not valid JSON ({e.msg}); move it away to start a fresh export"
        raise DataFormatError(path, message, line=e.lineno) from e
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise DataFormatError(path, "expected a DiscordChatExporter JSON object with a 'messages' list")
    return data


async def export_channel(
    channel: discord.TextChannel,
    chat_dir: str | Path,
    *,
    after: datetime | None = None,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
) -> ExportResult:
    """Export a channel's history, appending to the previous export when there is one.

    Args:
        channel (`discord.TextChannel`): the channel to read (needs Read Message History).
        chat_dir (`str | Path`): the directory holding exports.
        after (`datetime`, *optional*): only messages after this time (UTC); on an incremental run the later of
            this and the newest exported message wins.
        on_progress (`Callable[[int], Awaitable[None]]`, *optional*): awaited with the number of messages
            fetched so far, every `PROGRESS_EVERY_MESSAGES` messages.
    """
    path = export_path(chat_dir, channel.guild.id, channel.id)
    existing = await asyncio.to_thread(read_export, path)
    messages: list[dict[str, Any]] = existing["messages"] if existing else []
    seen = {m["id"] for m in messages}
    start: discord.abc.Snowflake | datetime | None = after
    if messages:
        newest = discord.Object(id=max(int(i) for i in seen))
        start = newest if after is None or discord.utils.snowflake_time(newest.id) > after else after

    fetched: list[dict[str, Any]] = []
    async for message in channel.history(limit=None, after=start, oldest_first=True):
        if str(message.id) in seen:
            continue
        fetched.append(message_to_dce(message))
        if on_progress is not None and len(fetched) % PROGRESS_EVERY_MESSAGES == 0:
            await on_progress(len(fetched))

    messages = sorted(messages + fetched, key=lambda m: int(m["id"]))
    document = {
        "guild": {"id": str(channel.guild.id), "name": channel.guild.name, "iconUrl": None},
        "channel": {
            "id": str(channel.id),
            "type": "GuildTextChat",
            "categoryId": str(channel.category_id) if channel.category_id else None,
            "category": channel.category.name if channel.category else None,
            "name": channel.name,
            "topic": channel.topic,
        },
        "dateRange": {"after": _timestamp(after), "before": None},
        "exportedAt": _timestamp(discord.utils.utcnow()),
        "messages": messages,
        "messageCount": len(messages),
    }
    await asyncio.to_thread(atomic_write_json, path, document, indent=None)
    logger.info("exported #%s: %d new, %d total -> %s", channel.name, len(fetched), len(messages), path)
    return ExportResult(path=path, added=len(fetched), total=len(messages))


def list_exports(chat_dir: str | Path, guild_id: int | None = None) -> list[Path]:
    """The export files in `chat_dir` (of one guild when `guild_id` is given), oldest write first."""
    pattern = f"{guild_id}-*.json" if guild_id is not None else "*.json"
    return sorted(Path(chat_dir).glob(pattern), key=lambda p: p.stat().st_mtime)


def apply_opt_outs(index: UserIndex, opted_out_ids: Iterable[int]) -> list[str]:
    """Mark every user whose Discord id opted out; returns the names marked (the index is changed in place)."""
    wanted = {str(i) for i in opted_out_ids}
    marked = []
    for user in index.users:
        if str(user.id) in wanted and not user.opted_out:
            index.set(user.username, opted_out=True)
            marked.append(user.username)
    return marked


def build_index(
    exports: list[Path],
    users_json: str | Path,
    *,
    min_share: float | None = None,
    config_path: str | Path | None = None,
    opted_out_ids: Iterable[int] = (),
) -> UserIndex:
    """Build (or update, keeping manual edits) the user index from channel exports and save it atomically.

    Counts are of cleaned messages before burst merging, as `python -m cloneus index build` counts them.
    Blocking (reads every export); call it through `asyncio.to_thread`.

    Args:
        exports (`list[Path]`): export files, in any format `read_chat` detects.
        users_json (`str | Path`): the index file; an existing one keeps its first names, exclusions, opt-outs.
        min_share (`float`, *optional*): users below this share (or count, when > 1) are context only; defaults
            to the existing index's, else the config's.
        config_path (`str | Path`, *optional*): the training config, for its cleaning rules and `min_share`.
        opted_out_ids (`Iterable[int]`, *optional*): Discord ids that opted out of cloning.
    """
    import pandas as pd

    from cloneus.config import CleaningConfig, load_config
    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat
    from cloneus.data.users import DEFAULT_MIN_SHARE, UserIndex

    if not exports:
        raise CloneusError(f"no channel exports next to {users_json}; run /admin export first")
    cleaning, config_share = CleaningConfig(), DEFAULT_MIN_SHARE
    if config_path is not None and Path(config_path).is_file():
        dataset = load_config(config_path).dataset
        cleaning, config_share = dataset.cleaning, dataset.min_share
    frame = pd.concat([read_chat(p) for p in exports], ignore_index=True)
    frame = clean_messages(frame, cleaning, merge_window_minutes=0).frame
    users_json = Path(users_json)
    existing = UserIndex.load(users_json) if users_json.exists() else None
    if min_share is None:
        min_share = existing.min_share if existing is not None else config_share
    index = UserIndex.build(frame, min_share, existing=existing)
    apply_opt_outs(index, opted_out_ids)
    index.save(users_json)
    return index
