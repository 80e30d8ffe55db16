"""Telegram Desktop JSON exports: a single chat's `result.json`, or a full account export (`chats.list`).

A single chat streams its messages with ijson. A full export holds many chats; mixing them would invent
conversations that never happened, so one chat is read: the one named by `chat=` (name or id), else the one
with the most messages (logged, with the others listed). Service messages (joins, pins, calls) count as
`dropped["system"]`; messages from deleted accounts (no `from`) as `dropped["no_author"]`. `text` may be a
string or a list of plain strings and entity objects, which are flattened to their text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.data.readers.frames import build_frame, check_json_depth, first_json_item, open_json, utf8_error
from cloneus.data.readers.timestamps import ParsedTimes, parse_timestamps
from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def _flatten(text: Any) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in text)
    return ""


def _shape_problem(m: Any) -> str | None:
    """What is of the wrong kind in one message (such a message is dropped as `malformed`); None if it fits."""
    if not isinstance(m, dict):
        return f"expected an object, got {type(m).__name__}"
    for key, kinds in (
        ("type", str),
        ("from", str),
        ("from_id", (str, int)),
        ("date", str),
        ("date_unixtime", (str, int)),
    ):
        value = m.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            return (
                f"{key}: expected {'a string' if kinds is str else 'a string or number'}, got {type(value).__name__}"
            )
    text = m.get("text")
    parts = text if isinstance(text, list) else [text]
    if not all(
        p is None or isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("text", ""), str)) for p in parts
    ):
        return "text: expected a string or a list of strings and {type, text} objects"
    return None


class _Columns:
    """Column lists filled one message at a time."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Any]] = {
            k: [] for k in ("message_id", "author_id", "author", "text", "timestamp", "reply_to")
        }
        self.positions: list[int] = []
        self.dropped = {"system": 0, "no_author": 0, "malformed": 0}
        self.first_malformed = ""

    def add(self, position: int, m: Any) -> None:
        problem = _shape_problem(m)
        if problem is not None:
            self.dropped["malformed"] += 1
            self.first_malformed = self.first_malformed or f"message {position}: {problem}"
            return
        if m.get("type", "message") != "message":
            self.dropped["system"] += 1
            return
        if not m.get("from"):
            self.dropped["no_author"] += 1
            return
        self.positions.append(position)
        unix = m.get("date_unixtime")
        reply = m.get("reply_to_message_id")
        self.rows["message_id"].append(str(m.get("id", position)))
        self.rows["author_id"].append(str(m.get("from_id") or m["from"]))
        self.rows["author"].append(str(m["from"]))
        self.rows["text"].append(_flatten(m.get("text")))
        # date_unixtime (newer exports) is exact UTC; `date` is local time without a zone.
        self.rows["timestamp"].append(f"@{unix}" if unix else m.get("date"))
        self.rows["reply_to"].append(str(reply) if reply is not None else None)


def _stamps(path: Path, cols: _Columns, where_prefix: str) -> ParsedTimes:
    """`date_unixtime` (epoch seconds, exact UTC) where the export has it, else `date` (local time, no zone)."""
    import numpy as np
    import pandas as pd

    raw = pd.Series(cols.rows["timestamp"], dtype=object)
    unix = raw.map(lambda v: isinstance(v, str) and v.startswith("@")).to_numpy(dtype=bool)
    stamps = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    out_of_range = np.zeros(len(raw), dtype=bool)
    for rows, values, key, unit in (
        (unix, raw[unix].str[1:], "date_unixtime", "s"),
        (~unix, raw[~unix], "date", None),
    ):
        if not rows.any():
            continue
        positions = np.asarray(cols.positions)[rows]
        parsed = parse_timestamps(
            values.reset_index(drop=True),
            path=path,
            where=lambda i, p=positions, k=key: {"field": f"{where_prefix}[{p[i]}].{k}"},
            epoch_unit=unit,
        )
        stamps[rows] = parsed.stamps.to_numpy()
        out_of_range[rows] = parsed.out_of_range
    return ParsedTimes(stamps, out_of_range)


def _is_full_export(path: Path) -> bool:
    """A full export has a top-level `chats` object; a single chat has `messages` (both come after small keys)."""
    import ijson

    with open_json(path) as f:
        try:
            for prefix, event, value in ijson.parse(f):
                if prefix == "" and event == "map_key" and value in ("chats", "messages"):
                    return value == "chats"
        except ijson.JSONError:
            return False
    return False


def _read_single(path: Path) -> tuple[_Columns, str, str]:
    import ijson

    cols = _Columns()
    name = first_json_item(path, "name")
    with open_json(path) as f:
        position = 0
        try:
            for m in ijson.items(f, "messages.item", use_float=True):
                cols.add(position, m)
                position += 1
        except (ijson.JSONError, UnicodeDecodeError) as e:
            raise utf8_error(path) or DataFormatError(
                path,
                f"invalid or truncated JSON after {position} message(s) ({str(e).splitlines()[0]}); export again",
                field=f"messages[{position}]",
            ) from None
    return cols, str(name or ""), "messages"


def _read_full(path: Path, chat: str | None) -> tuple[_Columns, str, str]:
    import ijson

    best: tuple[_Columns, str, int, int] | None = None
    seen: list[str] = []
    with open_json(path) as f:
        try:
            for index, c in enumerate(ijson.items(f, "chats.list.item", use_float=True)):
                if not isinstance(c, dict) or not isinstance(c.get("messages") or [], list):
                    raise DataFormatError(
                        path, "a chat must be an object with a messages list", field=f"chats.list[{index}]"
                    )
                name, ident, messages = str(c.get("name") or ""), str(c.get("id", "")), c.get("messages") or []
                seen.append(f"{name or '(unnamed)'} (id {ident}, {len(messages)} messages)")
                wanted = chat in (name, ident) if chat is not None else best is None or len(messages) > best[2]
                if wanted:
                    cols = _Columns()
                    for position, m in enumerate(messages):
                        cols.add(position, m)
                    best = (cols, name, len(messages), index)
        except (ijson.JSONError, UnicodeDecodeError) as e:
            raise utf8_error(path) or DataFormatError(
                path,
                f"invalid or truncated JSON after {len(seen)} chat(s) ({str(e).splitlines()[0]})",
                field="chats.list",
            ) from None
    if best is None:
        problem = f"no chat named {chat!r}" if chat else "no chats"
        raise DataFormatError(path, f"{problem}; chats in this export: {'; '.join(seen) or 'none'}", field="chats")
    cols, name, _, index = best
    if chat is None and len(seen) > 1:
        logger.info("%s: read chat %r, the largest of: %s (pick another with chat=)", path, name, "; ".join(seen))
    return cols, name, f"chats.list[{index}].messages"


def read_telegram(path: str | Path, chat: str | None = None) -> pd.DataFrame:
    """Read a Telegram Desktop JSON export into the canonical frame.

    Args:
        path (`str | Path`): `result.json`.
        chat (`str`, *optional*): in a full export, the chat's name or id; defaults to the largest chat.
    """
    path = Path(path)
    check_json_depth(path)
    cols, name, where = _read_full(path, chat) if _is_full_export(path) else _read_single(path)
    out_of_range = None
    if cols.first_malformed:
        logger.warning(
            "%s: dropped %d malformed message(s) (first: %s)", path, cols.dropped["malformed"], cols.first_malformed
        )
    if cols.positions:
        times = _stamps(path, cols, where)
        cols.rows["timestamp"], out_of_range = times.stamps, times.out_of_range
    return build_frame(
        cols.rows,
        path=path,
        fmt="telegram",
        dropped=cols.dropped,
        out_of_range=out_of_range,
        extra_attrs={"chat": name},
    )
