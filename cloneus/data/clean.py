"""Cleaning: turn raw export rows into the messages a clone should learn from.

Every rule is a vectorised pandas operation over the whole text column; the few rules that need a Python
callback (mention names) run only on the rows that contain a `<`. On a million messages cleaning takes a few
seconds. The order matters and is fixed:

1. timestamps to UTC; a minority dated before 1990 (epoch 0 and other clock faults, among years of real dates)
   is dropped as `implausible_date`, since it would stretch the chat's time span; then a stable sort by time
   (exports can be out of order; ties keep file order);
2. each author id takes its latest display name (`unify_author_names`);
3. drop bot accounts, then command messages (checked on the raw text);
4. strip Discord CDN attachment links, resolve mentions/channels/emoji, collapse blank lines, trim whitespace;
5. drop messages left empty (`attachment_only` if they held only CDN links, else `empty`);
6. merge bursts: consecutive messages of one author, each within `merge_window_minutes` of the previous one,
   become one message joined by newlines, keeping the first message's id, timestamp and reply; replies to a
   folded message are pointed at its burst.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloneus.config import CleaningConfig

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

CDN_LINK = r"https?://(?:cdn\.discordapp\.com|media\.discordapp\.net)/\S*"
# <@id> / <@!id> user, <@&id> role, <#id> channel, <:name:id> / <a:name:id> custom emoji.
DISCORD_MARKUP = re.compile(r"<(@!?|@&|#)(\d+)>|<a?:(\w+):\d+>")
BLANK_LINE_RUN = r"\n[ \t]*(?:\n[ \t]*)+"
# No supported chat app predates this (IRC logs start in 1988, the others after 2000): earlier dates are clock faults.
PLAUSIBLE_SINCE = "1990-01-01"
MAX_LOGGED_ROWS = 5


@dataclass
class CleanResult:
    """What `clean_messages` returns.

    Args:
        frame (`pd.DataFrame`): the cleaned canonical frame, sorted by time, index reset.
        dropped (`dict[str, int]`): rows removed per reason (`system`, `no_author`, `media` and `deleted` come
            from the reader; `bot`, `command`, `attachment_only`, `empty` and `merged` from cleaning).
    """

    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)


def _to_utc(stamps: pd.Series) -> pd.Series:
    import pandas as pd

    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(stamps.dtype):
        stamps = stamps.dt.tz_localize("UTC")
    else:
        stamps = pd.to_datetime(stamps, utc=True, format="mixed")
    return stamps.astype("datetime64[ns, UTC]")


def _implausible_dates(frame: pd.DataFrame) -> pd.Series:
    """Rows dated before `PLAUSIBLE_SINCE` when most of the chat is not (logged with their ids and dates).

    When most of the chat is that early the export's clock itself is off, and dropping most of it would hide
    that: those rows are kept and the problem is logged.
    """
    import pandas as pd

    stamps = frame["timestamp"]
    early = stamps < pd.Timestamp(PLAUSIBLE_SINCE, tz="UTC")
    count = int(early.sum())
    if not count:
        return early
    rows = frame[early].head(MAX_LOGGED_ROWS)
    pairs = zip(rows["message_id"], rows["timestamp"], strict=True)
    examples = ", ".join(f"message {i} at {t:%Y-%m-%d %H:%M}" for i, t in pairs)
    examples += ", ..." if count > MAX_LOGGED_ROWS else ""
    if count * 2 >= int(stamps.notna().sum()):
        logger.warning("most timestamps are before %s (%s); check the export's clock", PLAUSIBLE_SINCE, examples)
        return early & False
    logger.warning("dropped %d message(s) dated before %s, among later ones (%s)", count, PLAUSIBLE_SINCE, examples)
    return early


def _sort_by_time(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    stamps = frame["timestamp"]
    if stamps.isna().all() or stamps.is_monotonic_increasing:
        return frame
    backwards = int((stamps.diff() < pd.Timedelta(0)).sum())
    logger.info("%d message(s) were out of time order; sorted stably by timestamp", backwards)
    return frame.sort_values("timestamp", kind="stable", na_position="last")


def _name_maps(frame: pd.DataFrame, attrs: dict) -> tuple[dict[str, str], dict[str, str]]:
    """Who and which channel an id names: the frame's own authors (latest name) first, then what the reader knew."""
    import numpy as np
    import pandas as pd

    users = {str(k): str(v) for k, v in attrs.get("user_names", {}).items() if v}
    codes, ids = pd.factorize(frame["author_id"])
    last = np.zeros(len(ids), dtype=np.int64)
    last[codes] = np.arange(len(codes))
    users.update(zip(map(str, ids), map(str, frame["author"].iloc[last]), strict=True))
    channels = {str(k): str(v) for k, v in attrs.get("channels", {}).items() if v}
    return users, channels


def _resolve_markup(texts: pd.Series, users: dict[str, str], channels: dict[str, str]) -> pd.Series:
    def replace(m: re.Match[str]) -> str:
        kind, ident, emoji = m.groups()
        if emoji is not None:
            return f":{emoji}:"
        name = channels.get(ident) if kind == "#" else users.get(ident) if kind != "@&" else None
        return f"{kind[0]}{name}" if name else m.group(0)

    return texts.map(lambda t: DISCORD_MARKUP.sub(replace, t))


def _rewrite_text(frame: pd.DataFrame, cleaning: CleaningConfig, attrs: dict) -> tuple[pd.Series, pd.Series]:
    """The cleaned text column, and which rows held only CDN links.

    One regex pass finds the few rows any rewrite can touch (a `<`, a newline or a Discord link); the rules then
    run on those rows only.
    """
    import pandas as pd

    text = frame["text"]
    cdn_only = pd.Series(False, index=text.index)
    special = text.str.contains(r"[<\n]|discordapp\.", regex=True)
    if not special.any():
        return text.str.strip(), cdn_only
    sub = text[special]
    if cleaning.strip_cdn_attachments:
        has_cdn = sub.str.contains("discordapp.", regex=False)
        if has_cdn.any():
            stripped = sub[has_cdn].str.replace(CDN_LINK, "", regex=True)
            cdn_only[stripped.index[stripped.str.strip() == ""]] = True
            sub = sub.mask(has_cdn, stripped)
    if cleaning.resolve_mentions:
        has_markup = sub.str.contains("<", regex=False)
        if has_markup.any():
            users, channels = _name_maps(frame, attrs)
            sub = sub.mask(has_markup, _resolve_markup(sub[has_markup], users, channels))
    if cleaning.collapse_blank_lines:
        sub = sub.str.replace(BLANK_LINE_RUN, "\n\n", regex=True)
    text = text.copy()
    text[special] = sub
    return text.str.strip(), cdn_only


def _latest_names(frame: pd.DataFrame, codes: np.ndarray) -> pd.Series:
    """The author column with each id's most recent display name (the frame is sorted by time)."""
    import numpy as np
    import pandas as pd

    name_codes, _ = pd.factorize(frame["author"])
    if len(np.unique((codes.astype(np.int64) << 32) | name_codes)) == codes.max() + 1:
        return frame["author"]  # every id already has a single name
    last = np.zeros(codes.max() + 1, dtype=np.int64)
    last[codes] = np.arange(len(codes))  # numpy keeps the last write: each id's latest row
    return frame["author"].iloc[last[codes]].set_axis(frame.index)


def _removed_rows(frame: pd.DataFrame, cleaning: CleaningConfig, attrs: dict, dropped: dict[str, int]) -> np.ndarray:
    """Rewrite `frame["text"]` in place and mark the rows to drop, counting each under the first rule hitting it.

    Rules look at the whole frame and the frame is filtered once, by the caller: every filter of a million rows
    copies each string column.
    """
    import numpy as np

    removed = np.zeros(len(frame), dtype=bool)

    def mark(mask: pd.Series, reason: str) -> None:
        new = mask.to_numpy(dtype=bool, na_value=False) & ~removed
        dropped[reason] = dropped.get(reason, 0) + int(new.sum())
        removed[new] = True

    if cleaning.drop_bots and "is_bot" in frame.columns:
        mark(frame["is_bot"].fillna(False).astype(bool), "bot")
    if cleaning.command_prefixes:
        prefixes = "|".join(re.escape(p) for p in cleaning.command_prefixes)
        # The appended space stands in for end-of-text: `$` and `\s` would push pandas off pyarrow onto Python re.
        command = (frame["text"] + " ").str.contains(rf"^[ \t]*(?:{prefixes})[A-Za-z0-9_][A-Za-z0-9_-]*[ \t\r\n]")
        mark(command, "command")
    frame["text"], cdn_only = _rewrite_text(frame, cleaning, attrs)
    if cleaning.drop_empty:
        mark(cdn_only, "attachment_only")
        mark(frame["text"] == "", "empty")
    return removed


def _merge_bursts(
    frame: pd.DataFrame, alive: np.ndarray, codes: np.ndarray, window_minutes: float, merge_untimed: bool
) -> pd.DataFrame:
    """The rows at positions `alive`, each run of one author's messages (gaps <= the window) folded into its first.

    Works on positions and numpy arrays, so the string columns are copied once, by the final `take`.
    A gap with a missing timestamp (NaT) merges when `merge_untimed` (a format without timestamps: consecutive
    messages of one author always merge), and never otherwise.
    """
    import numpy as np

    stamps = frame["timestamp"].to_numpy(dtype="datetime64[ns]")[alive]
    authors = codes[alive]
    gap = np.diff(stamps)
    follows = np.r_[
        False,
        (authors[1:] == authors[:-1])
        & ((gap <= np.timedelta64(int(window_minutes * 60e9), "ns")) | (np.isnat(gap) & merge_untimed)),
    ]
    keep = ~follows
    result = frame.take(alive[keep])
    if not follows.any():
        return result
    group = np.cumsum(keep)  # group g (numbered from 1) is the g-th kept row
    in_burst = ~(keep & np.r_[keep[1:], True])  # every row except bursts of one
    # Bursts are contiguous runs, so slicing a list beats groupby.agg, which builds a Series per group.
    texts = frame["text"].take(alive[in_burst]).tolist()
    ids = group[in_burst]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    merged = result["text"].copy()
    merged.iloc[ids[starts] - 1] = ["\n".join(texts[a:b]) for a, b in zip(starts, ends, strict=True)]
    result["text"] = merged
    if result["reply_to"].notna().any():
        # A reply to a message that was folded into a burst now points at the burst.
        message_ids = frame["message_id"].to_numpy()[alive]
        folded = dict(zip(message_ids[follows], message_ids[keep][group[follows] - 1], strict=True))
        replies = result["reply_to"].copy()
        remap = replies.isin(folded.keys())
        replies[remap] = replies[remap].map(folded)
        result["reply_to"] = replies
    return result


def clean_messages(
    frame: pd.DataFrame,
    cleaning: CleaningConfig | None = None,
    merge_window_minutes: float = 7.0,
    *,
    merge_untimed: bool = True,
) -> CleanResult:
    """Apply the cleaning rules to a canonical frame (see the module docstring for the order).

    Args:
        frame (`pd.DataFrame`): from `read_chat`; not modified.
        cleaning (`CleaningConfig`, *optional*): which rules run; defaults to `CleaningConfig()`.
        merge_window_minutes (`float`, *optional*, defaults to `7.0`): burst merge window; 0 disables merging.
        merge_untimed (`bool`, *optional*, defaults to `True`): whether messages without a timestamp merge with
            their author's neighbours. Exports without timestamps merge; serving histories without them do not
            (`cloneus.data.normalize`).

    Returns:
        `CleanResult` with the cleaned frame (its `attrs` keep the reader's, with `dropped` updated) and the
        number of rows dropped per reason, including the reader's.
    """
    import numpy as np
    import pandas as pd

    cleaning = cleaning or CleaningConfig()
    attrs = dict(frame.attrs)
    dropped: dict[str, int] = dict(attrs.get("dropped", {}))
    out = frame.copy()
    out.attrs = {}  # pandas deep-copies attrs on every operation; put them back at the end
    out["text"] = out["text"].fillna("").astype("str")
    out["timestamp"] = _to_utc(out["timestamp"])
    implausible = _implausible_dates(out)
    if implausible.any():
        out = out[~implausible]
        dropped["implausible_date"] = dropped.get("implausible_date", 0) + int(implausible.sum())
    out["reply_to"] = out["reply_to"].astype(object).where(out["reply_to"].notna(), None)
    out = _sort_by_time(out).reset_index(drop=True)
    codes, _ = pd.factorize(out["author_id"])
    if cleaning.unify_author_names and len(out):
        out["author"] = _latest_names(out, codes)
    alive = np.flatnonzero(~_removed_rows(out, cleaning, attrs, dropped))
    if merge_window_minutes > 0 and len(alive):
        out = _merge_bursts(out, alive, codes, merge_window_minutes, merge_untimed)
    else:
        out = out.take(alive)
    dropped["merged"] = dropped.get("merged", 0) + len(alive) - len(out)
    out = out.reset_index(drop=True)
    out.attrs = {**attrs, "dropped": dropped}
    return CleanResult(frame=out, dropped=dropped)
