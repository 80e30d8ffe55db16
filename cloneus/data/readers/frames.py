"""Helpers every reader shares: building the canonical frame, parsing timestamps, pinpointing bad bytes.

Readers collect plain Python lists (or pandas columns) and hand them to `build_frame`, so the canonical dtypes
live in one place. Error paths do extra work (rescanning the file for the offending byte or CSV record) only
after something failed, so a clean file pays nothing for good error messages.
"""

from __future__ import annotations

import codecs
import csv
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
    # A zero-width joiner next to a letter or digit ("a\u200dlice"); between emoji it builds one glyph, so it stays.
    "|(?<=\\w)\u200d|\u200d(?=\\w)"
)
NAME_COLUMNS = ("author_id", "author", "username")
MAX_LOGGED_NAMES = 5


def canonical_name(name: str) -> str:
    """A name as it looks: NFC, without invisible characters, whitespace runs as one space, trimmed.

    "alice", "\ufeffalice", "a\u200dlice" and " alice " all look like alice, so they must be one user, not
    several that nobody can tell apart in the prompt.
    """
    return " ".join(INVISIBLE.sub("", unicodedata.normalize("NFC", name)).split())


def _canonical_authors(frame: pd.DataFrame, path: str | Path) -> tuple[pd.DataFrame, int]:
    """The frame with `canonical_name` applied to its name columns, less the rows whose author is then empty."""
    changed: dict[str, str] = {}
    for column in NAME_COLUMNS:
        if column not in frame.columns:
            continue
        names = frame[column].astype(str)
        mapping = {n: canonical_name(n) for n in names.unique()}
        moved = {k: v for k, v in mapping.items() if k != v}
        if moved:
            changed.update(moved)
            frame[column] = names.map(mapping)
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


def open_json(path: str | Path) -> BinaryIO:
    """Open a JSON file for ijson in binary mode, past a UTF-8 byte-order mark if there is one."""
    f = open(path, "rb")
    if f.read(len(UTF8_BOM)) != UTF8_BOM:
        f.seek(0)
    return f


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
