"""Tell chat export formats apart by their content, never by the file extension.

JSON exports are told apart by their keys, read as a stream so a huge file is not loaded: DiscordChatExporter
has `guild` (and messages with `author`/`content`), Telegram has `chats` (full export) or messages with
`from`/`date`. Text files are CSV when the header names the known columns, WhatsApp when the first lines start
with a WhatsApp date stamp.

Files that are not what they claim are named for what they are: UTF-16 or other non-UTF-8 text is an encoding
problem (with the `iconv` fix), and exports of apps CloneUs does not read (Instagram and Messenger JSON, Signal
via signal-export or its XML backup, HTML exports) are reported as unsupported, with the supported list.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import BinaryIO

from cloneus.data.readers.frames import (
    FORMAT_NAMES,
    UTF8_BOM,
    check_json_depth,
    json_depth_error,
    open_json,
    utf8_error,
)
from cloneus.errors import DataFormatError

SNIFF_BYTES = 64 * 1024
SNIFF_LINES = 20
DCE_CSV_COLUMNS = ("authorid", "author", "date", "content")
GENERIC_CSV_COLUMNS = ("username", "text")
DCE_MESSAGE_KEYS = {"author", "content", "timestamp", "attachments", "reference"}
TELEGRAM_MESSAGE_KEYS = {"from", "from_id", "date", "date_unixtime", "text", "text_entities", "actor"}
# Instagram and Facebook Messenger ("Download your information") JSON: top-level and per-message keys.
META_TOP_KEYS = {"participants", "thread_path", "magic_words", "is_still_participant", "joinable_mode"}
META_MESSAGE_KEYS = {"sender_name", "timestamp_ms"}
# signal-export Markdown: "[2019-05-29, 15:04] Me: text". WhatsApp iOS brackets always hold seconds.
SIGNAL_STAMP = re.compile(r"^\[\d{4}-\d{2}-\d{2},? \d{1,2}:\d{2}\] ")
UNSUPPORTED_TEXT = (
    (
        re.compile(r"^<\?xml[^>]*>\s*(?:<!--.*?-->\s*)*<smses", re.S),
        "Signal plaintext backup (SignalPlaintextBackup.xml)",
    ),
    (re.compile(r"^(?:<!doctype html|<html)", re.I), "HTML chat export (export as JSON or text instead)"),
)
# A WhatsApp line starts with a date and a time: "[15.01.24, 09:05:12] " (iOS) or "15/01/2024, 09:05 - " (Android).
WHATSAPP_STAMP = re.compile(
    r"^[\u200e\u200f]?\[?\d{1,4}[./-]\d{1,2}[./-]\d{1,4},?\s+\d{1,2}[:.]\d{2}"
    r"(?:[:.]\d{2})?(?:[\s\u202f\u00a0]*[AaPp]\.?\s?[Mm]\.?)?(?:\]\s|\s[-\u2013]\s)"
)


def known_formats() -> str:
    return "; ".join(FORMAT_NAMES.values())


def _unknown(path: Path, why: str) -> DataFormatError:
    return DataFormatError(path, f"{why}. Known formats: {known_formats()}")


def _unsupported(path: Path, what: str) -> DataFormatError:
    return DataFormatError(
        path, f"this is a {what}, which CloneUs does not read. Supported formats: {known_formats()}"
    )


def _encoding_problem(path: Path, head: bytes) -> DataFormatError | None:
    """An error for UTF-16/32 text or the first invalid UTF-8 byte; None for UTF-8 (a stray NUL is allowed)."""
    nul_share = head[:4096].count(0) / max(1, len(head[:4096]))
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or nul_share > 0.2:
        return DataFormatError(
            path,
            "is UTF-16 (or UTF-32) text, not UTF-8; re-save the export as UTF-8, for example "
            "`iconv -f utf-16 -t utf-8 IN > OUT`",
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut by the sniff limit
            return utf8_error(path)
    return None


def _json_keys_format(path: Path, stream: BinaryIO) -> str | None:
    """The format named by the first telling key in `stream`, or None if it ends (or breaks off) before one."""
    import ijson

    for prefix, event, value in ijson.parse(stream):
        if event != "map_key":
            if prefix == "" and event == "start_array":
                raise _unknown(path, "a JSON array at the top level is not a chat export")
            continue
        if (prefix == "" and value in META_TOP_KEYS) or (prefix == "messages.item" and value in META_MESSAGE_KEYS):
            raise _unsupported(path, "Instagram or Facebook Messenger JSON export")
        if prefix == "" and value in ("guild", "chats"):
            return "dce_json" if value == "guild" else "telegram"
        if prefix == "messages.item" and value in DCE_MESSAGE_KEYS | TELEGRAM_MESSAGE_KEYS:
            return "dce_json" if value in DCE_MESSAGE_KEYS else "telegram"
    return None


def _detect_json(path: Path, head: bytes, whole: bool) -> str:
    """Exports name themselves in their first keys, so the sniffed head (checked for depth on its own) usually
    decides, and only the reader scans the whole file; otherwise the whole file is checked, then streamed."""
    import ijson

    try:
        if json_depth_error(path, head) is None:
            found = _json_keys_format(path, io.BytesIO(head))
            if found is not None:
                return found
    except ijson.IncompleteJSONError:
        pass  # the head ends mid-value; the whole file decides
    except ijson.JSONError as e:
        if whole:
            raise DataFormatError(path, f"not valid JSON ({str(e).splitlines()[0]}); the file is damaged") from None
    check_json_depth(path)
    with open_json(path) as f:
        try:
            found = _json_keys_format(path, f)
        except ijson.JSONError as e:
            reason = str(e).splitlines()[0]
            raise DataFormatError(path, f"not valid JSON ({reason}); the file is damaged or truncated") from None
    if found is None:
        raise _unknown(path, "JSON without the keys of a known export ('guild', 'chats' or 'messages')")
    return found


def _detect_text(path: Path, head: str) -> str:
    lines = [line for line in head.splitlines() if line.strip()]
    header = [c.strip().lower() for c in next(csv.reader([lines[0]]))]
    if all(c in header for c in DCE_CSV_COLUMNS):
        return "dce_csv"
    if all(c in header for c in GENERIC_CSV_COLUMNS):
        return "generic_csv"
    for pattern, what in UNSUPPORTED_TEXT:
        if pattern.match(head.lstrip()):
            raise _unsupported(path, what)
    if any(SIGNAL_STAMP.match(line) for line in lines[:SNIFF_LINES]):
        raise _unsupported(path, "Signal chat exported by signal-export (Markdown)")
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
    if not head_bytes[skip:].strip():
        raise DataFormatError(path, "file is empty")
    problem = _encoding_problem(path, head_bytes[skip:])
    if problem is not None:
        raise problem
    head = head_bytes[skip:].decode("utf-8", errors="replace")
    first = head.lstrip()
    # iOS WhatsApp lines start with "[", like a JSON array; the date stamp tells them apart.
    if first[0] == "{" or (first[0] == "[" and not WHATSAPP_STAMP.match(first)):
        return _detect_json(path, head_bytes[skip:], whole=len(head_bytes) < SNIFF_BYTES)
    return _detect_text(path, head)
