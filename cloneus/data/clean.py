"""Cleaning: turn raw export rows into the messages a clone should learn from.

Every rule is a vectorised pandas operation over the whole text column; the few rules that need a Python
callback (mention names) run only on the rows that contain a `<`. On a million messages cleaning takes a few
seconds. The order matters and is fixed:

1. timestamps to UTC, then a stable sort by time (exports can be out of order; ties keep file order);
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
    import pandas as pd

logger = logging.getLogger(__name__)

CDN_LINK = r"https?://(?:cdn\.discordapp\.com|media\.discordapp\.net)/\S*"
# <@id> / <@!id> user, <@&id> role, <#id> channel, <:name:id> / <a:name:id> custom emoji.
DISCORD_MARKUP = re.compile(r"<(@!?|@&|#)(\d+)>|<a?:(\w+):\d+>")
BLANK_LINE_RUN = r"\n[ \t]*(?:\n[ \t]*)+"


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


def _sort_by_time(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    stamps = frame["timestamp"]
    if stamps.isna().all() or stamps.is_monotonic_increasing:
        return frame
    backwards = int((stamps.diff() < pd.Timedelta(0)).sum())
    logger.info("%d message(s) were out of time order; sorted stably by timestamp", backwards)
    return frame.sort_values("timestamp", kind="stable", na_position="last")


def _name_maps(frame: pd.DataFrame, attrs: dict) -> tuple[dict[str, str], dict[str, str]]:
    """Who and which channel an id names: the frame's own authors first, then what the reader knew."""
    users = {str(k): str(v) for k, v in attrs.get("user_names", {}).items() if v}
    latest = frame.drop_duplicates("author_id", keep="last")
    users.update(zip(latest["author_id"].astype(str), latest["author"].astype(str), strict=True))
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
    """The cleaned text column, and which rows held only CDN links."""
    import pandas as pd

    text = frame["text"]
    cdn_only = pd.Series(False, index=text.index)
    if cleaning.strip_cdn_attachments:
        has_cdn = text.str.contains("discordapp.", regex=False)
        if has_cdn.any():
            stripped = text[has_cdn].str.replace(CDN_LINK, "", regex=True)
            cdn_only = has_cdn & (stripped.reindex(text.index).str.strip() == "")
            text = text.mask(has_cdn, stripped)
    if cleaning.resolve_mentions:
        has_markup = text.str.contains("<", regex=False)
        if has_markup.any():
            users, channels = _name_maps(frame, attrs)
            text = text.mask(has_markup, _resolve_markup(text[has_markup], users, channels))
    if cleaning.collapse_blank_lines:
        multiline = text.str.contains("\n", regex=False)
        if multiline.any():
            text = text.mask(multiline, text[multiline].str.replace(BLANK_LINE_RUN, "\n\n", regex=True))
    return text.str.strip(), cdn_only


def _merge_bursts(frame: pd.DataFrame, window_minutes: float) -> pd.DataFrame:
    """Fold each run of one author's messages, with gaps <= the window, into its first message.

    Without timestamps (all NaT) consecutive messages of one author always merge.
    """
    import numpy as np
    import pandas as pd

    gap = frame["timestamp"].diff()
    close = gap.le(pd.Timedelta(minutes=window_minutes)) | gap.isna()
    follows = frame["author_id"].eq(frame["author_id"].shift()) & close
    if not follows.any():
        return frame
    group = (~follows).cumsum().to_numpy()
    keep = ~follows.to_numpy()
    in_burst = ~(keep & np.r_[keep[1:], True])  # every row except bursts of one
    # Bursts are contiguous runs, so slicing a list beats groupby.agg, which builds a Series per group.
    texts = frame["text"][in_burst].tolist()
    ids = group[in_burst]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    firsts = frame[keep].copy()
    # Group g (numbered from 1) is the g-th kept row.
    labels = firsts.index[ids[starts] - 1]
    merged = firsts["text"].copy()
    merged.loc[labels] = ["\n".join(texts[a:b]) for a, b in zip(starts, ends, strict=True)]
    firsts["text"] = merged
    if firsts["reply_to"].notna().any():
        # A reply to a message that was folded into a burst now points at the burst.
        message_ids = frame["message_id"].to_numpy()
        folded = dict(zip(message_ids[~keep], message_ids[keep][group[~keep] - 1], strict=True))
        replies = firsts["reply_to"].copy()
        remap = replies.isin(folded.keys())
        replies[remap] = replies[remap].map(folded)
        firsts["reply_to"] = replies
    return firsts


def clean_messages(
    frame: pd.DataFrame, cleaning: CleaningConfig | None = None, merge_window_minutes: float = 7.0
) -> CleanResult:
    """Apply the cleaning rules to a canonical frame (see the module docstring for the order).

    Args:
        frame (`pd.DataFrame`): from `read_chat`; not modified.
        cleaning (`CleaningConfig`, *optional*): which rules run; defaults to `CleaningConfig()`.
        merge_window_minutes (`float`, *optional*, defaults to `7.0`): burst merge window; 0 disables merging.

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
    out["reply_to"] = out["reply_to"].astype(object).where(out["reply_to"].notna(), None)
    out = _sort_by_time(out)
    if cleaning.unify_author_names and len(out):
        codes, _ = pd.factorize(out["author_id"])
        last = np.zeros(codes.max() + 1, dtype=np.int64)
        last[codes] = np.arange(len(codes))  # numpy keeps the last write: each id's latest row
        out["author"] = out["author"].iloc[last[codes]].set_axis(out.index)

    # Each rule marks rows on the whole frame; a row counts under the first rule that removes it.
    removed = np.zeros(len(out), dtype=bool)

    def mark(mask: pd.Series, reason: str) -> None:
        nonlocal removed
        new = mask.to_numpy(dtype=bool, na_value=False) & ~removed
        dropped[reason] = dropped.get(reason, 0) + int(new.sum())
        removed |= new

    if cleaning.drop_bots and "is_bot" in out.columns:
        mark(out["is_bot"].fillna(False).astype(bool), "bot")
    if cleaning.command_prefixes:
        prefixes = "|".join(re.escape(p) for p in cleaning.command_prefixes)
        # The appended space stands in for end-of-text: `$` and `\s` would push pandas off pyarrow onto Python re.
        command = (out["text"] + " ").str.contains(rf"^[ \t]*(?:{prefixes})[A-Za-z0-9_][A-Za-z0-9_-]*[ \t\r\n]")
        mark(command, "command")
    text, cdn_only = _rewrite_text(out, cleaning, attrs)
    out["text"] = text
    if cleaning.drop_empty:
        mark(cdn_only, "attachment_only")
        mark(out["text"] == "", "empty")
    if removed.any():
        out = out[~removed]
    before = len(out)
    if merge_window_minutes > 0 and len(out):
        out = _merge_bursts(out, merge_window_minutes)
    dropped["merged"] = dropped.get("merged", 0) + before - len(out)
    out = out.reset_index(drop=True)
    out.attrs = {**attrs, "dropped": dropped}
    return CleanResult(frame=out, dropped=dropped)
