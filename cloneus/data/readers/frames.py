"""Helpers every reader shares: building the canonical frame, parsing timestamps, pinpointing bad bytes.

Readers collect plain Python lists (or pandas columns) and hand them to `build_frame`, so the canonical dtypes
live in one place. Error paths do extra work (rescanning the file for the offending byte or CSV record) only
after something failed, so a clean file pays nothing for good error messages.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import pandas as pd

UTF8_BOM = codecs.BOM_UTF8
SCAN_CHUNK_BYTES = 1 << 20
FORMAT_NAMES = {
    "dce_json": "DiscordChatExporter JSON",
    "dce_csv": "DiscordChatExporter CSV (AuthorID,Author,Date,Content,Attachments,Reactions)",
    "generic_csv": "generic CSV (username,text[,timestamp])",
    "whatsapp": "WhatsApp .txt export (iOS or Android)",
    "telegram": "Telegram Desktop JSON (result.json, single chat or full export)",
}


def build_frame(
    columns: dict[str, Any],
    *,
    path: str | Path,
    fmt: str,
    extra_attrs: dict[str, Any] | None = None,
    dropped: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Assemble the canonical frame from columns (lists or Series) and record provenance in `frame.attrs`.

    `frame.attrs` carries what later steps may use: `format`, `source`, `dropped` (reason -> rows the reader
    skipped; `clean_messages` adds them to its own counts) and reader-specific keys such as `guild`, `channel`,
    `channels` (id -> name) and `user_names` (id -> display name, for mentions of people who never wrote).
    """
    import pandas as pd

    from cloneus.data.messages import COLUMNS

    frame = pd.DataFrame(columns).reset_index(drop=True)
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
    frame["reply_to"] = frame["reply_to"].astype(object).where(frame["reply_to"].notna(), None)
    extras = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[COLUMNS + extras]
    frame.attrs = {
        "format": fmt,
        "source": str(path),
        "dropped": {k: v for k, v in (dropped or {}).items() if v},
        **(extra_attrs or {}),
    }
    if frame.empty:
        raise DataFormatError(path, f"no messages found (read as {FORMAT_NAMES[fmt]})")
    return frame


def parse_timestamps(
    values: pd.Series | Sequence[Any], *, path: str | Path, where: Callable[[int], dict[str, Any]]
) -> pd.Series:
    """Parse ISO-8601 strings (any offsets; none means UTC) into `datetime64[ns, UTC]`.

    Mixed offsets are normalised to UTC. A missing value or one that does not parse raises `DataFormatError`;
    `where(i)` gives the `line=`/`field=` of value i for the message.
    """
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    parsed = None
    for fmt in ("ISO8601", "mixed"):
        try:
            parsed = pd.to_datetime(series, utc=True, format=fmt)
            break
        except (ValueError, TypeError, OverflowError):
            continue
    if parsed is None:
        parsed = pd.to_datetime(series, utc=True, format="mixed", errors="coerce")
    missing = parsed.isna().to_numpy()
    if missing.any():
        bad = int(missing.argmax())
        raise DataFormatError(
            path,
            f"cannot parse timestamp {series.iloc[bad]!r}; expected ISO 8601 like 2024-01-31T18:05:00+00:00",
            **where(bad),
        )
    return parsed.astype("datetime64[ns, UTC]")


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
