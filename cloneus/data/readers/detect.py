"""Tell chat export formats apart by their content, never by the file extension.

JSON exports are told apart by their keys, read as a stream so a huge file is not loaded: DiscordChatExporter
has `guild` (and messages with `author`/`content`), Telegram has `chats` (full export) or messages with
`from`/`date`. Text files are CSV when the header names the known columns, WhatsApp when the first lines start
with a WhatsApp date stamp.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from cloneus.data.readers.frames import FORMAT_NAMES, UTF8_BOM
from cloneus.errors import DataFormatError

SNIFF_BYTES = 64 * 1024
SNIFF_LINES = 20
DCE_CSV_COLUMNS = ("authorid", "author", "date", "content")
GENERIC_CSV_COLUMNS = ("username", "text")
DCE_MESSAGE_KEYS = {"author", "content", "timestamp", "attachments", "reference"}
TELEGRAM_MESSAGE_KEYS = {"from", "from_id", "date", "date_unixtime", "text", "text_entities", "actor"}
# A WhatsApp line starts with a date and a time: "[15.01.24, 09:05:12] " (iOS) or "15/01/2024, 09:05 - " (Android).
WHATSAPP_STAMP = re.compile(
    r"^[\u200e\u200f]?\[?\d{1,4}[./-]\d{1,2}[./-]\d{1,4},?\s+\d{1,2}[:.]\d{2}"
    r"(?:[:.]\d{2})?(?:[\s\u202f\u00a0]*[AaPp]\.?\s?[Mm]\.?)?(?:\]\s|\s[-\u2013]\s)"
)


def known_formats() -> str:
    return "; ".join(FORMAT_NAMES.values())


def _unknown(path: Path, why: str) -> DataFormatError:
    return DataFormatError(path, f"{why}. Known formats: {known_formats()}")


def _detect_json(path: Path, skip: int) -> str:
    import ijson

    with open(path, "rb") as f:
        f.seek(skip)
        try:
            for prefix, event, value in ijson.parse(f):
                if event != "map_key":
                    if prefix == "" and event == "start_array":
                        raise _unknown(path, "a JSON array at the top level is not a chat export")
                    continue
                if prefix == "":
                    if value == "guild":
                        return "dce_json"
                    if value == "chats":
                        return "telegram"
                elif prefix == "messages.item":
                    if value in DCE_MESSAGE_KEYS:
                        return "dce_json"
                    if value in TELEGRAM_MESSAGE_KEYS:
                        return "telegram"
        except ijson.JSONError as e:
            raise DataFormatError(path, f"not valid JSON ({e}); expected a chat export object") from None
    raise _unknown(path, "JSON without the keys of a known export ('guild', 'chats' or 'messages')")


def _detect_text(path: Path, head: str) -> str:
    lines = [line for line in head.splitlines() if line.strip()]
    header = [c.strip().lower() for c in next(csv.reader([lines[0]]))]
    if all(c in header for c in DCE_CSV_COLUMNS):
        return "dce_csv"
    if all(c in header for c in GENERIC_CSV_COLUMNS):
        return "generic_csv"
    if any(WHATSAPP_STAMP.match(line) for line in lines[:SNIFF_LINES]):
        return "whatsapp"
    for name, wanted in (("DiscordChatExporter CSV", DCE_CSV_COLUMNS), ("generic CSV", GENERIC_CSV_COLUMNS)):
        present = [c for c in wanted if c in header]
        if present and len(header) > 1:
            missing = ", ".join(c for c in wanted if c not in header)
            raise DataFormatError(
                path,
                f"looks like a {name} but the header lacks column(s) {missing} (header: {', '.join(header)})",
                line=1,
            )
    raise _unknown(path, f"unrecognised content (first line: {lines[0][:80]!r})")


def detect_format(path: str | Path) -> str:
    """Name the export format of `path`: one of the keys of `FORMAT_NAMES`.

    Raises:
        DataFormatError: the file is missing or empty, or matches no known format (the message lists them).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head_bytes = f.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a directory; expected a chat export file") from None
    skip = len(UTF8_BOM) if head_bytes.startswith(UTF8_BOM) else 0
    head = head_bytes[skip:].decode("utf-8", errors="replace")
    if not head.strip():
        raise DataFormatError(path, "file is empty")
    first = head.lstrip()
    # iOS WhatsApp lines start with "[", like a JSON array; the date stamp tells them apart.
    if first[0] == "{" or (first[0] == "[" and not WHATSAPP_STAMP.match(first)):
        return _detect_json(path, skip)
    return _detect_text(path, head)
