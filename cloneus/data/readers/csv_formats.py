"""The two CSV layouts: DiscordChatExporter CSV and the generic `username,text[,timestamp]`.

Both are read by pandas' C parser with every cell as a string and NA detection off, so a message that reads
"None" or "NA" stays text and a million rows parse in about a second. Header names match case-insensitively.
Rows with an empty author are dropped and counted under `dropped["no_author"]`, with a warning naming the
first such line.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.data.readers.frames import build_frame, csv_line_of_record, utf8_error
from cloneus.data.readers.timestamps import ParsedTimes, parse_timestamps
from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DCE_COLUMNS = {"authorid": "AuthorID", "author": "Author", "date": "Date", "content": "Content"}
DCE_OPTIONAL = {"attachments": "Attachments"}
GENERIC_COLUMNS = {"username": "username", "text": "text"}
GENERIC_OPTIONAL = {"timestamp": "timestamp"}
# Legacy Discord tags ("name#1234", "name#0") carry no meaning for a display name.
DISCRIMINATOR = r"#\d{1,4}$"
PARSER_LINE = re.compile(r"line (\d+)")


def _read_table(path: Path, required: dict[str, str], optional: dict[str, str]) -> pd.DataFrame:
    """Read the wanted columns (matched case-insensitively) as strings, renamed to lower-case keys."""
    import pandas as pd

    options = {"dtype": str, "keep_default_na": False, "na_filter": False, "encoding": "utf-8-sig"}
    try:
        header = list(pd.read_csv(path, nrows=0, **options).columns)
        # A list of names, not a callable: a callable `usecols` makes the C parser about 50% slower.
        wanted = [c for c in header if c.strip().lower() in required.keys() | optional.keys()]
        table = pd.read_csv(path, usecols=wanted if len(wanted) < len(header) else None, **options)
    except UnicodeDecodeError:
        raise utf8_error(path) or DataFormatError(path, "not valid UTF-8") from None
    except pd.errors.ParserError as e:
        found = PARSER_LINE.search(str(e))
        raise DataFormatError(
            path, f"malformed CSV ({e}); check quoting", line=int(found.group(1)) if found else None
        ) from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(path, "file is empty") from None
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [required[c] for c in required if c not in table.columns]
    if missing:
        raise DataFormatError(
            path, f"missing column(s) {', '.join(missing)}; expected {', '.join(required.values())}", line=1
        )
    return table


def _drop_missing_authors(path: Path, table: pd.DataFrame, column: str) -> tuple[pd.DataFrame, int]:
    empty = table[column].str.strip() == ""
    count = int(empty.sum())
    if count:
        first = csv_line_of_record(path, int(empty.to_numpy().argmax()))
        logger.warning("%s: dropped %d message(s) with an empty %s (first at line %d)", path, count, column, first)
        table = table[~empty]
    return table, count


def _timestamps(path: Path, table: pd.DataFrame, column: str, date_format: str) -> ParsedTimes:
    return parse_timestamps(
        table[column],
        path=path,
        where=lambda i: {"line": csv_line_of_record(path, int(table.index[i])), "field": column},
        date_format=date_format,
    )


def read_dce_csv(path: str | Path, date_format: str = "auto") -> pd.DataFrame:
    """Read a DiscordChatExporter CSV (`AuthorID,Author,Date,Content,Attachments,Reactions`).

    The CSV has no message ids or reply links: `message_id` is the row number and `reply_to` is empty.
    Attachment URLs (comma-separated in `Attachments`) are appended to the text on their own lines.
    `date_format` is `dataset.date_format` (see `cloneus.data.readers.timestamps`).
    """
    import pandas as pd

    path = Path(path)
    table = _read_table(path, DCE_COLUMNS, DCE_OPTIONAL)
    table, no_author = _drop_missing_authors(path, table, "author")
    text = table["content"]
    if "attachments" in table.columns:
        urls = table["attachments"].str.replace(r"\s*,\s*", "\n", regex=True).str.strip()
        text = (text + "\n" + urls).str.strip("\n").where(urls != "", text)
    author = table["author"].str.replace(DISCRIMINATOR, "", regex=True)
    times = _timestamps(path, table, "date", date_format)
    columns = {
        "message_id": pd.Series(table.index.to_numpy(), index=table.index).astype("str"),
        "author_id": table["authorid"],
        "author": author,
        "text": text,
        "timestamp": times.stamps,
        "reply_to": [None] * len(table),
        "username": author,
    }
    return build_frame(
        columns, path=path, fmt="dce_csv", dropped={"no_author": no_author}, out_of_range=times.out_of_range
    )


def read_generic_csv(path: str | Path, date_format: str = "auto") -> pd.DataFrame:
    """Read the generic CSV `username,text[,timestamp]`.

    `author_id` is the case-folded username and `author` the username as written: chat usernames (IRC nicks,
    Discord, Slack, Telegram handles) are case-insensitive, so `Dr_Willis` and `dr_willis` are one member, who
    takes the latest spelling as display name. Without a timestamp column every timestamp is NaT, and
    the dataset step falls back to token-budget chunking. Naive timestamps are taken as UTC; numbers are epoch
    times, and numeric dates follow `date_format` (see `cloneus.data.readers.timestamps`).
    """
    import pandas as pd

    path = Path(path)
    table = _read_table(path, GENERIC_COLUMNS, GENERIC_OPTIONAL)
    table, no_author = _drop_missing_authors(path, table, "username")
    out_of_range = None
    if "timestamp" in table.columns:
        times = _timestamps(path, table, "timestamp", date_format)
        stamps, out_of_range = times.stamps, times.out_of_range
    else:
        stamps = pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns, UTC]")
    username = table["username"].str.strip()
    columns = {
        "message_id": pd.Series(table.index.to_numpy(), index=table.index).astype("str"),
        "author_id": username.str.casefold(),
        "author": username,
        "text": table["text"],
        "timestamp": stamps,
        "reply_to": [None] * len(table),
    }
    return build_frame(
        columns, path=path, fmt="generic_csv", dropped={"no_author": no_author}, out_of_range=out_of_range
    )
