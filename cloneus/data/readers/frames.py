"""Helpers every reader shares: building the canonical frame, parsing timestamps, pinpointing bad bytes.

Readers collect plain Python lists (or pandas columns) and hand them to `build_frame`, so the canonical dtypes
live in one place. Error paths do extra work (rescanning the file for the offending byte or CSV record) only
after something failed, so a clean file pays nothing for good error messages.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

UTF8_BOM = codecs.BOM_UTF8
SCAN_CHUNK_BYTES = 1 << 20
# Chat exports nest about 8 levels (Telegram: chats.list[].messages[].text[]). ijson keeps a prefix string per
# open level, so memory grows with the square of the depth: 400 KB of brackets took 20 GB before this cap.
MAX_JSON_DEPTH = 64
DEPTH_SCAN_BYTES = 1 << 18
# `\\` and `\"`, matched left to right: a quote after an odd run of backslashes is blanked with the last one.
QUOTE_ESCAPE = re.compile(rb'\\[\\"]')
NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
FORMAT_NAMES = {
    "dce_json": "DiscordChatExporter JSON",
    "dce_csv": "DiscordChatExporter CSV (AuthorID,Author,Date,Content,Attachments,Reactions)",
    "generic_csv": "generic CSV (username,text[,timestamp])",
    "whatsapp": "WhatsApp .txt export (iOS or Android)",
    "telegram": "Telegram Desktop JSON (result.json, single chat or full export)",
}
# Characters that show as nothing: C0/C1 controls (not the whitespace ones), the byte-order mark, zero-width and
# bidi marks, soft hyphen, and the blank "letters" used for invisible nicknames (Hangul fillers, braille blank).
INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u061c\u115f\u1160\u180e\u200b\u200c\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\u2800\u3164\ufeff\uffa0]"
    # A zero-width joiner not between two symbols ("a\u200dlice"); between emoji it builds one glyph, so it stays.
    "|(?<![^\\w\\s])\u200d|\u200d(?![^\\w\\s])"
)
NAME_COLUMNS = ("author_id", "author", "username")
MAX_LOGGED_NAMES = 5


def strip_invisible(name: str) -> str:
    """`name` in NFC, without the characters that show as nothing (`INVISIBLE`)."""
    return INVISIBLE.sub("", unicodedata.normalize("NFC", name))


def canonical_name(name: str) -> str:
    """A name as it looks: `strip_invisible`, whitespace runs as one space, trimmed.

    "alice", "\ufeffalice", "a\u200dlice" and " alice " all look like alice, so they must be one user, not
    several that nobody can tell apart in the prompt.
    """
    if name.isascii() and name.isprintable() and name.strip() == name and "  " not in name:
        return name  # the common case, already canonical
    return " ".join(strip_invisible(name).split())


def _canonical_authors(frame: pd.DataFrame, path: str | Path) -> tuple[pd.DataFrame, int]:
    """The frame with `canonical_name` applied to its name columns, less the rows whose author is then empty."""
    seen: dict[str, str] = {}
    changed: dict[str, str] = {}
    for column in NAME_COLUMNS:
        if column not in frame.columns:
            continue
        names = frame[column]
        uniques = names.unique().tolist()
        seen.update((n, canonical_name(str(n))) for n in uniques if n not in seen)
        moved = {n: seen[n] for n in uniques if seen[n] != n}
        if moved:
            changed.update(moved)
            rows = names.isin(moved.keys())
            frame.loc[rows, column] = names[rows].map(moved)
    if changed:
        examples = ", ".join(f"{k!r} -> {v!r}" for k, v in list(changed.items())[:MAX_LOGGED_NAMES])
        logger.warning(
            "%s: %d author name(s) held invisible characters or odd whitespace and now read as they look (%s)",
            path,
            len(changed),
            examples,
        )
    unnamed = ((frame["author"] == "") | (frame["author_id"] == "")).to_numpy()
    if unnamed.any():
        logger.warning("%s: dropped %d message(s) whose author name is blank", path, int(unnamed.sum()))
        frame = frame[~unnamed].reset_index(drop=True)
    return frame, int(unnamed.sum())


def build_frame(
    columns: dict[str, Any],
    *,
    path: str | Path,
    fmt: str,
    extra_attrs: dict[str, Any] | None = None,
    dropped: dict[str, int] | None = None,
    out_of_range: np.ndarray | None = None,
) -> pd.DataFrame:
    """Assemble the canonical frame from columns (lists or Series) and record provenance in `frame.attrs`.

    `frame.attrs` carries what later steps may use: `format`, `source`, `dropped` (reason -> rows the reader
    skipped; `clean_messages` adds them to its own counts) and reader-specific keys such as `guild`, `channel`,
    `channels` (id -> name) and `user_names` (id -> display name, for mentions of people who never wrote).
    Rows flagged in `out_of_range` (from `ParsedTimes`) are dropped as `date_out_of_range`; author names are
    made canonical (`canonical_name`), and rows left without one are dropped as `no_author`.
    """
    import pandas as pd

    from cloneus.data.messages import COLUMNS

    frame = pd.DataFrame(columns).reset_index(drop=True)
    dropped = dict(dropped or {})
    if out_of_range is not None and out_of_range.any():
        frame = frame[~out_of_range].reset_index(drop=True)
        dropped["date_out_of_range"] = int(out_of_range.sum())
    if not frame.empty:
        frame, unnamed = _canonical_authors(frame, path)
        dropped["no_author"] = dropped.get("no_author", 0) + unnamed
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
    frame["reply_to"] = frame["reply_to"].astype(object).where(frame["reply_to"].notna(), None)
    extras = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[COLUMNS + extras]
    frame.attrs = {
        "format": fmt,
        "source": str(path),
        "dropped": {k: v for k, v in dropped.items() if v},
        **(extra_attrs or {}),
    }
    if frame.empty:
        raise DataFormatError(path, f"no messages found (read as {FORMAT_NAMES[fmt]})")
    return frame


def json_depth_error(path: str | Path, data: bytes | None = None) -> DataFormatError | None:
    """An error if the JSON in `path` (or `data`, bytes read from it) nests deeper than `MAX_JSON_DEPTH`, else None.

    One pass at near disk speed, before ijson sees the file: escaped quotes and backslashes are blanked, so
    every quote left opens or closes a string; `bytes.translate` keeps only quotes and brackets;
    numpy counts the brackets that are outside strings (an even number of quotes before them).
    """
    import numpy as np

    steps = np.zeros(256, dtype=np.int32)
    steps[list(b"[{")], steps[list(b"]}")] = 1, -1
    depth, in_string, offset, carry = 0, 0, 0, b""
    with open(path, "rb") if data is None else io.BytesIO(data) as f:
        while block := f.read(DEPTH_SCAN_BYTES):
            chunk = carry + block
            blanked = QUOTE_ESCAPE.sub(b"__", chunk) if b"\\" in chunk else chunk
            # A backslash left unpaired at the end escapes the first byte of the next block.
            carry = chunk[-1:] if blanked.endswith(b"\\") else b""
            marks = np.frombuffer(blanked[: len(blanked) - len(carry)].translate(None, NOT_STRUCTURE), dtype=np.uint8)
            quotes = np.cumsum(marks == 0x22, dtype=np.int32) + in_string
            brackets = np.flatnonzero(marks != 0x22)
            outside = (quotes[brackets] & 1) == 0
            levels = depth + np.cumsum(steps[marks[brackets[outside]]])
            if len(levels) and levels.max() > MAX_JSON_DEPTH:
                return DataFormatError(
                    path,
                    f"JSON nested more than {MAX_JSON_DEPTH} levels deep (within bytes {offset}-{offset + len(block)})"
                    "; a chat export nests about 8, so this file is damaged or not an export",
                )
            depth = int(levels[-1]) if len(levels) else depth
            in_string = int(quotes[-1] & 1) if len(quotes) else in_string
            offset += len(block)
    return None


def check_json_depth(path: str | Path) -> None:
    """Raise `json_depth_error(path)` if there is one."""
    deep = json_depth_error(path)
    if deep is not None:
        raise deep


def open_json(path: str | Path) -> BinaryIO:
    """Open a JSON file for ijson in binary mode, past a UTF-8 byte-order mark if there is one."""
    f = open(path, "rb")
    if f.read(len(UTF8_BOM)) != UTF8_BOM:
        f.seek(0)
    return f


def first_json_item(path: str | Path, prefix: str) -> Any:
    """The value at `prefix` (e.g. 'guild'), or None when the file lacks it or breaks off before it.

    Exports write these small keys before their messages, so this reads little of the file.
    """
    import ijson

    with open_json(path) as f:
        try:
            return next(ijson.items(f, prefix, use_float=True), None)
        except (ijson.JSONError, UnicodeDecodeError):
            return None


def locate_bad_utf8(path: str | Path) -> tuple[int, int] | None:
    """Byte offset and 1-based line of the first byte that is not valid UTF-8, or None if the file is clean."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    newlines = 0
    with open(path, "rb") as f:
        while chunk := f.read(SCAN_CHUNK_BYTES):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                # The decoder may hold back up to 3 bytes of an unfinished sequence from the previous chunk.
                pending = len(decoder.getstate()[0])
                start = max(e.start - pending, 0)
                return offset + start, newlines + chunk.count(b"\n", 0, start) + 1
            offset += len(chunk)
            newlines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset - len(decoder.getstate()[0]), newlines + 1
    return None


def utf8_error(path: str | Path) -> DataFormatError | None:
    """A `DataFormatError` pointing at the first invalid UTF-8 byte, or None if there is none."""
    found = locate_bad_utf8(path)
    if found is None:
        return None
    offset, line = found
    with open(path, "rb") as f:
        f.seek(offset)
        byte = f.read(1)
    return DataFormatError(
        path,
        f"byte 0x{byte.hex()} at offset {offset} is not valid UTF-8; re-save the export as UTF-8 "
        f"(for example `iconv -f cp1252 -t utf-8 IN > OUT`)",
        line=line,
    )


def csv_line_of_record(path: str | Path, record: int) -> int:
    """Physical 1-based line where data record `record` (0-based, after the header) starts.

    Quoted fields may span lines, so `record + 2` is only right for single-line rows; this rescans with the
    csv module and is called only when building an error message.
    """
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        previous_end = 0
        for i, _ in enumerate(reader):
            if i == record + 1:
                return previous_end + 1
            previous_end = reader.line_num
    return record + 2
