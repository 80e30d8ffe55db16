"""DiscordChatExporter JSON: `{"guild", "channel", "messages": [...]}`.

The messages array is streamed with ijson (the yajl2 C backend), one message dict at a time, into column
lists, so a million-message export costs the final frame plus one message, not a parsed copy of the whole file.
Only `Default` and `Reply` messages are conversation; joins (`GuildMemberJoin`), pins (`ChannelPinnedMessage`)
and every other system type are counted under `dropped["system"]`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.data.readers.frames import build_frame, check_json_depth, first_json_item, open_json, utf8_error
from cloneus.data.readers.timestamps import parse_timestamps
from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

CONVERSATION_TYPES = frozenset({"Default", "Reply"})
NONE = type(None)
# (field, the value types it may hold, what to call them). `type(v) in kinds` keeps bools out of ints.
MESSAGE_FIELDS = (
    ("type", {str, NONE}, "a string"),
    ("content", {str, NONE}, "text"),
    ("attachments", {list, NONE}, "a list"),
    ("mentions", {list, NONE}, "a list"),
    ("reference", {dict, NONE}, "an object"),
)
AUTHOR_FIELDS = (
    ("id", {str, int, NONE}, "a string or number"),
    ("name", {str, NONE}, "a string"),
    ("nickname", {str, NONE}, "a string"),
    ("isBot", {bool, NONE}, "true or false"),
)
KIND_NAMES = {dict: "an object", list: "a list", str: "a string", NONE: "null"}


def _wrong(field: str, expected: str, value: Any) -> tuple[str, str]:
    return field, f"{expected}, got {KIND_NAMES.get(type(value), type(value).__name__)}"


def _shape_problem(m: Any) -> tuple[str, str] | None:
    """The first field of a message whose value is of the wrong kind, and what it should be; None if all fit.

    Exports edited by hand or by other tools put strings, lists or null where DCE writes objects; such a message
    is dropped (counted as `malformed`), and text that is not a string is never trained as a Python repr.
    Exact type tests keep this cheap: it runs once per message.
    """
    if type(m) is not dict:
        return _wrong("", "an object", m)
    author = m.get("author")
    if type(author) is not dict:
        return _wrong(".author", "an object", author)
    for key, kinds, expected in MESSAGE_FIELDS:
        if type(m.get(key)) not in kinds:
            return _wrong(f".{key}", expected, m.get(key))
    for key, kinds, expected in AUTHOR_FIELDS:
        if type(author.get(key)) not in kinds:
            return _wrong(f".author.{key}", expected, author.get(key))
    for key in ("attachments", "mentions"):
        for i, item in enumerate(m.get(key) or ()):
            if type(item) is not dict:
                return _wrong(f".{key}[{i}]", "an object", item)
            if key == "attachments" and type(item.get("url")) not in {str, NONE}:
                return _wrong(f".attachments[{i}].url", "a string", item.get("url"))
    reference = m.get("reference")
    if reference is not None and type(reference.get("messageId")) not in {str, int, NONE}:
        return _wrong(".reference.messageId", "an id", reference.get("messageId"))
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
    check_json_depth(path)
    guild = first_json_item(path, "guild")
    channel = first_json_item(path, "channel")
    positions, ids, author_ids, authors, usernames, bots, texts, stamps, replies = [], [], [], [], [], [], [], [], []
    user_names: dict[str, str] = {}
    system = malformed = 0
    first_malformed = ""
    count = 0
    with open_json(path) as f:
        try:
            for count, m in enumerate(ijson.items(f, "messages.item", use_float=True), start=1):
                problem = _shape_problem(m)
                if problem is not None:
                    malformed += 1
                    first_malformed = first_malformed or f"messages[{count - 1}]{problem[0]}: expected {problem[1]}"
                    continue
                if (m.get("type") or "Default") not in CONVERSATION_TYPES:
                    system += 1
                    continue
                author = m["author"]
                if author.get("id") in (None, ""):
                    raise DataFormatError(path, "message has no author id", field=f"messages[{count - 1}].author.id")
                text = m.get("content") or ""
                attachments = m.get("attachments")
                if attachments:
                    text = "\n".join([text, *(a.get("url") or "" for a in attachments)]).strip("\n")
                for mention in m.get("mentions") or ():
                    name = mention.get("nickname") or mention.get("name")
                    user_names[str(mention.get("id"))] = name if isinstance(name, str) else ""
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
    if malformed:
        logger.warning("%s: dropped %d malformed message(s) (first: %s)", path, malformed, first_malformed)
    channels = (
        {str(channel["id"]): str(channel.get("name") or "")} if isinstance(channel, dict) and channel.get("id") else {}
    )
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
        dropped={"system": system, "malformed": malformed},
        out_of_range=times.out_of_range,
        extra_attrs={"guild": guild, "channel": channel, "channels": channels, "user_names": user_names},
    )
