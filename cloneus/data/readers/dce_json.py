"""DiscordChatExporter JSON: `{"guild", "channel", "messages": [...]}`.

The messages array is streamed with ijson (the yajl2 C backend), one message dict at a time, into column
lists, so a million-message export costs the final frame plus one message, not a parsed copy of the whole file.
Only `Default` and `Reply` messages are conversation; joins (`GuildMemberJoin`), pins (`ChannelPinnedMessage`)
and every other system type are counted under `dropped["system"]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.data.readers.frames import build_frame, open_json, utf8_error
from cloneus.data.readers.timestamps import parse_timestamps
from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import pandas as pd

CONVERSATION_TYPES = frozenset({"Default", "Reply"})


def _first_item(path: Path, prefix: str) -> Any:
    """The value at `prefix` (e.g. 'guild'); DCE writes guild and channel before messages, so this reads little."""
    import ijson

    with open_json(path) as f:
        try:
            return next(ijson.items(f, prefix, use_float=True), None)
        except ijson.JSONError:
            return None


def _json_error(path: Path, err: Exception, count: int) -> DataFormatError:
    bad = utf8_error(path)
    if bad is not None:
        return bad
    return DataFormatError(
        path,
        f"invalid or truncated JSON after {count} message(s) ({str(err).splitlines()[0]}); re-export the channel",
        field=f"messages[{count}]",
    )


def read_dce_json(path: str | Path) -> pd.DataFrame:
    """Read a DiscordChatExporter JSON export into the canonical frame.

    Extra columns: `username` (author.name) and `is_bot` (author.isBot). `author` is the nickname, else the
    name. Attachment URLs are appended to the text on their own lines, so cleaning can strip CDN links.
    `frame.attrs` gets `guild` and `channel` (id and name), `channels` (id -> name for `<#id>`) and
    `user_names` (id -> name of everyone mentioned).
    """
    import ijson

    path = Path(path)
    guild = _first_item(path, "guild")
    channel = _first_item(path, "channel")
    positions, ids, author_ids, authors, usernames, bots, texts, stamps, replies = [], [], [], [], [], [], [], [], []
    user_names: dict[str, str] = {}
    system = 0
    count = 0
    with open_json(path) as f:
        try:
            for count, m in enumerate(ijson.items(f, "messages.item", use_float=True), start=1):
                if m.get("type", "Default") not in CONVERSATION_TYPES:
                    system += 1
                    continue
                author = m.get("author")
                if not isinstance(author, dict) or not author.get("id"):
                    raise DataFormatError(path, "message has no author id", field=f"messages[{count - 1}].author.id")
                text = m.get("content") or ""
                attachments = m.get("attachments")
                if attachments:
                    text = "\n".join([text, *(a.get("url", "") for a in attachments)]).strip("\n")
                for mention in m.get("mentions") or ():
                    user_names[str(mention.get("id"))] = mention.get("nickname") or mention.get("name") or ""
                reference = m.get("reference")
                positions.append(count - 1)
                ids.append(str(m.get("id", count)))
                author_ids.append(str(author["id"]))
                authors.append(author.get("nickname") or author.get("name") or str(author["id"]))
                usernames.append(author.get("name") or str(author["id"]))
                bots.append(bool(author.get("isBot", False)))
                texts.append(text)
                stamps.append(m.get("timestamp"))
                replies.append(str(reference["messageId"]) if reference and reference.get("messageId") else None)
        except ijson.JSONError as e:
            raise _json_error(path, e, count) from None
        except UnicodeDecodeError as e:
            raise _json_error(path, e, count) from None
    channels = {str(channel["id"]): channel.get("name", "")} if isinstance(channel, dict) else {}
    times = parse_timestamps(stamps, path=path, where=lambda i: {"field": f"messages[{positions[i]}].timestamp"})
    frame_columns = {
        "message_id": ids,
        "author_id": author_ids,
        "author": authors,
        "text": texts,
        "timestamp": times.stamps,
        "reply_to": replies,
        "username": usernames,
        "is_bot": bots,
    }
    return build_frame(
        frame_columns,
        path=path,
        fmt="dce_json",
        dropped={"system": system},
        out_of_range=times.out_of_range,
        extra_attrs={"guild": guild, "channel": channel, "channels": channels, "user_names": user_names},
    )
