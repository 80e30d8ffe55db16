"""Chat export readers: every format becomes the same canonical message frame.

`read_chat(path)` sniffs the format from the content (`detect.py`), then calls that format's reader. Each
reader returns the columns of `cloneus.data.messages` plus optional extras (`username`, `is_bot`), and
records in `frame.attrs` the rows it skipped (`dropped`) and what it knows about the export (`format`,
`source`, and for Discord `guild`, `channel`, `channels`, `user_names`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.data.readers.csv_formats import read_dce_csv, read_generic_csv
from cloneus.data.readers.dce_json import read_dce_json
from cloneus.data.readers.detect import detect_format, known_formats
from cloneus.data.readers.frames import FORMAT_NAMES
from cloneus.data.readers.telegram import read_telegram
from cloneus.data.readers.whatsapp import read_whatsapp

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_NAMES", "detect_format", "known_formats", "read_chat"]


def read_chat(path: str | Path, *, chat: str | None = None, date_format: str = "auto") -> pd.DataFrame:
    """Read a chat export of any supported format into the canonical message frame.

    Args:
        path (`str | Path`): a DiscordChatExporter JSON or CSV, a generic `username,text[,timestamp]` CSV, a
            WhatsApp `.txt` or a Telegram Desktop `result.json`. The extension is ignored.
        chat (`str`, *optional*): for a full Telegram export, the name or id of the chat to read (default: the
            largest). Ignored by the other formats.
        date_format (`str`, *optional*, defaults to `"auto"`): `dataset.date_format`, the order of numeric dates
            like 01/11/2004 in CSV and WhatsApp exports: `auto` (decided per file), `dayfirst` or `monthfirst`.

    Returns:
        `pd.DataFrame` with columns `message_id, author_id, author, text, timestamp, reply_to` (+ extras), in
        file order; `clean_messages` sorts by time.

    Raises:
        DataFormatError: the file is unreadable, of an unknown format, or malformed; the message names the file
            and the line or field.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "telegram":
        frame = read_telegram(path, chat=chat)
    elif fmt == "dce_json":
        frame = read_dce_json(path)
    else:
        readers = {"dce_csv": read_dce_csv, "generic_csv": read_generic_csv, "whatsapp": read_whatsapp}
        frame = readers[fmt](path, date_format=date_format)
    logger.info("%s: %d messages read as %s", path, len(frame), FORMAT_NAMES[fmt])
    return frame
