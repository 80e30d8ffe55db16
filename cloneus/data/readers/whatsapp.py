"""WhatsApp "Export chat" text files, iOS and Android layouts.

    [15.01.24, 09:05:12] Alice: hi            iOS (date order and separators follow the phone's locale)
    15/01/2024, 09:05 - Alice: hi             Android
    1/15/24, 9:05 PM - Alice: hi              Android, US locale, 12-hour clock

A line that starts with a date stamp opens a message; any other line continues the previous one. The date
order (day/month or month/day) is decided once for the whole file by the rules every reader shares
(`cloneus.data.readers.timestamps`), and a time no clock shows (25:61) is an error. The times carry no
zone, so they are read as UTC; only the gaps between them matter downstream. System notices (Android: a
stamp line without `Name: `; iOS: text that starts with U+200E LEFT-TO-RIGHT MARK) count as
`dropped["system"]`; media placeholders (`<Media omitted>`, `image omitted`, `<attached: ...>`, and their
German, Spanish, French, Italian, Portuguese, Dutch and other translations) as `dropped["media"]`; "This
message was deleted" (and translations) as `dropped["deleted"]`. A bracketed phrase repeated as whole
messages (an unknown locale's placeholder) is warned about.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.data.readers.frames import build_frame, utf8_error
from cloneus.data.readers.timestamps import ParsedTimes, bound_to_range, decide_date_order
from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

STAMP_LINE = (
    r"^[\u200e\u200f]?\[?(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4}),?[ \u202f\u00a0]+"
    r"(?P<hour>\d{1,2})[:.](?P<minute>\d{2})(?:[:.](?P<second>\d{2}))?"
    r"(?:[ \u202f\u00a0]*(?P<ampm>[AaPp])\.?[ \u202f\u00a0]?[Mm]\.?)?(?:\] |[ \u202f\u00a0][-\u2013] )(?P<rest>.*)$"
)
# Up to 60 characters without a colon, then ": " - a system line like "Alice added Bob" has no such prefix.
AUTHOR_SPLIT = r"^(?P<author>[^:\n]{1,60}?):(?: (?P<text>[\s\S]*))?$"
# Placeholders follow the phone's language. Android writes one "<Media omitted>"; iOS names the kind of file.
MEDIA_PLACEHOLDERS = (
    "Media omitted|Medien ausgeschlossen|Multimedia omitido|Multimédia omitido|Médias omis|Media omessi"
    "|Mídia oculta|Arquivo de mídia oculto|Media weggelaten|Без медиафайлов|Medya dahil edilmedi"
    "|Pominięto multimedia|Media tidak disertakan|Media utelämnad|Media utelämnat|Media udeladt|Media utelatt"
)
IOS_MEDIA = (
    "(?:image|video|audio|sticker|GIF|document) omitted"
    "|(?:Bild|Video|Audio|Sticker|GIF|Dokument) weggelassen"
    "|(?:imagen|video|audio|sticker|GIF|documento) omitid[oa]"
    "|(?:image|vidéo|audio|autocollant|GIF|document) absente?"
    "|(?:immagine|video|audio|sticker|GIF|documento) omess[oa]"
    "|(?:imagem|vídeo|áudio|figurinha|GIF|documento) ocultad[oa]"
    "|(?:afbeelding|video|audio|sticker|GIF|document) weggelaten"
)
ATTACHED = "attached|Anhang|adjunto|pièce jointe|allegato|anexado|bijlage"
MEDIA = re.compile(rf"^(?:<(?:{MEDIA_PLACEHOLDERS})>|(?:{IOS_MEDIA})|<(?:{ATTACHED}) ?: [^>]*>)$", re.IGNORECASE)
DELETED = re.compile(
    r"^(?:This message was deleted|You deleted this message|Diese Nachricht wurde gelöscht|Du hast diese Nachricht "
    r"gelöscht|Se eliminó este mensaje|Eliminaste este mensaje|Ce message a été supprimé|Vous avez supprimé ce "
    r"message|Questo messaggio è stato eliminato|Hai eliminato questo messaggio|Mensagem apagada|Você apagou esta "
    r"mensagem|Dit bericht is verwijderd|Je hebt dit bericht verwijderd)\.?$",
    re.IGNORECASE,
)
# A message that is only "<...>", repeated: most likely a placeholder in a language missing above.
BRACKETED = r"^<[^<>\n]{3,60}>$"
REPEATED_BRACKETED = 3
DIRECTION_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2068\u2069"


def _clock(times: pd.DataFrame, path: Path, lines: pd.Index) -> pd.DataFrame:
    """Hour/minute/second columns (24-hour), refusing times no clock shows, such as 25:61 or 13:05 PM."""
    import pandas as pd

    hour, minute = times["hour"].astype(int), times["minute"].astype(int)
    second = times["second"].fillna("0").astype(int)
    twelve = times["ampm"].notna()
    bad = (minute > 59) | (second > 59) | (hour > 23) | (twelve & ((hour > 12) | (hour == 0)))
    if bad.any():
        i = int(bad.to_numpy().argmax())
        shown = f"{times['hour'].iloc[i]}:{times['minute'].iloc[i]}" + (
            f" {times['ampm'].iloc[i]}M" if twelve.iloc[i] else ""
        )
        raise DataFormatError(path, f"impossible time {shown!r}", line=int(lines[i]), field="time")
    if twelve.any():
        pm = times["ampm"].fillna("a").str.lower().eq("p")
        hour = hour % 12 + pm * 12
    return pd.DataFrame({"hour": hour, "minute": minute, "second": second})


def _date_parts(dates: pd.Series, times: pd.DataFrame, path: Path, lines: pd.Index, date_format: str) -> ParsedTimes:
    """The timestamps of the message lines, with the date order chosen for the whole file."""
    import pandas as pd

    fields = dates.str.split(r"[./-]", expand=True, regex=True).astype(int)
    a, b, c = fields[0], fields[1], fields[2]
    clock = _clock(times, path, lines)

    def where(i: int) -> dict:
        return {"line": int(lines[i]), "field": "date"}

    def year_month_day(order: str) -> pd.DataFrame:
        year, month, day = {"yearfirst": (a, b, c), "dayfirst": (c, b, a), "monthfirst": (c, a, b)}[order]
        return pd.DataFrame({"year": year.where(year >= 100, year + 2000), "month": month, "day": day})

    if (a > 31).any():
        order = "yearfirst"
    else:
        order = decide_date_order(
            a,
            b,
            path=path,
            raw=dates,
            where=where,
            date_format=date_format,
            dates_for=lambda o: pd.to_datetime(year_month_day(o), errors="coerce"),
        )
    stamps = pd.to_datetime(year_month_day(order).join(clock), errors="coerce", utc=True)
    if stamps.isna().any():
        bad = int(stamps.isna().to_numpy().argmax())
        raise DataFormatError(path, f"impossible date {dates.iloc[bad]!r}", **where(bad))
    return bound_to_range(stamps, path=path, raw=dates, where=where)


def _warn_unknown_placeholders(path: Path, texts: pd.Series) -> None:
    counts = texts[texts.str.match(BRACKETED)].value_counts()
    counts = counts[counts >= REPEATED_BRACKETED]
    if len(counts):
        logger.warning(
            "%s: %s: messages that are only a bracketed phrase, many times; if that is WhatsApp's media placeholder "
            "in your phone's language, delete those lines (they would be trained as text)",
            path,
            ", ".join(f"{text!r} x{n}" for text, n in counts.head(3).items()),
        )


def read_whatsapp(path: str | Path, date_format: str = "auto") -> pd.DataFrame:
    """Read a WhatsApp chat export (`_chat.txt` / `WhatsApp Chat with X.txt`) into the canonical frame.

    `author_id` is the name as shown in the export (a contact name or phone number). `date_format` is
    `dataset.date_format`, used when no date in the file fixes the day/month order.
    """
    import pandas as pd

    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise utf8_error(path) or DataFormatError(path, "not valid UTF-8") from None
    lines = pd.Series(raw.replace("\r\n", "\n").replace("\r", "\n").split("\n"), dtype="str")
    head = lines.str.extract(STAMP_LINE)
    starts = head["date"].notna()
    if not starts.any():
        raise DataFormatError(path, "no WhatsApp message lines found", line=1)
    group = starts.cumsum()
    orphans = (group == 0) & lines.str.strip().ne("")
    if orphans.any():
        logger.warning("%s: ignored %d line(s) before the first message", path, int(orphans.sum()))
    body = head["rest"].where(starts, lines)[group > 0]
    multi = group[group > 0].duplicated(keep=False)
    text = body[~multi]
    if multi.any():
        joined = body[multi].groupby(group[group > 0][multi], sort=False).agg("\n".join)
        first_rows = group[group > 0][multi].drop_duplicates()
        text = pd.concat([text, pd.Series(joined.to_numpy(), index=first_rows.index)]).sort_index()
    heads = head[starts]
    line_numbers = heads.index + 1
    times = _date_parts(heads["date"], heads[["hour", "minute", "second", "ampm"]], path, line_numbers, date_format)
    stamps = times.stamps.set_axis(heads.index)
    split = text.str.extract(AUTHOR_SPLIT)
    content = split["text"].fillna("").str.strip().str.strip(DIRECTION_MARKS)
    media = content.str.match(MEDIA) & split["author"].notna()
    # iOS writes system notices as "Group name: \u200eNadia added Lea"; real messages never start with the mark.
    system = split["author"].isna() | (split["text"].fillna("").str.startswith("\u200e") & ~media)
    deleted = content.str.match(DELETED) & ~system
    keep = ~(system | media | deleted)
    _warn_unknown_placeholders(path, content[keep])
    author = split["author"][keep].str.strip(DIRECTION_MARKS + " ~\u00a0")
    columns = {
        "message_id": pd.Series(line_numbers[keep.to_numpy()].astype(str), index=author.index),
        "author_id": author,
        "author": author,
        "text": content[keep],
        "timestamp": stamps[keep],
        "reply_to": pd.Series(None, index=author.index, dtype=object),
    }
    dropped = {"system": int(system.sum()), "media": int(media.sum()), "deleted": int(deleted.sum())}
    return build_frame(
        columns, path=path, fmt="whatsapp", dropped=dropped, out_of_range=times.out_of_range[keep.to_numpy()]
    )
