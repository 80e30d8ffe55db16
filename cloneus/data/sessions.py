"""Sessions and chunks: where one conversation ends and the next begins.

Everything here works on index ranges `(start, end)` into the time-sorted message table, never on copies of
messages, so a million-message export costs a few arrays. The steps are:

1. `session_ranges`: a silence of at least `hours_between_sessions` starts a new session; sessions shorter than
   `min_session_length` merge into the neighbour nearer in time (`merge_short_sessions`).
2. `split_long`: a session whose token count (per-message counts from the real tokenizer, template overhead
   included, plus the system prefix repeated in each part) exceeds the budget is split at its longest internal
   silence, recursively. Ties go to the silence nearest the token midpoint, so equal gaps give balanced halves.
   Without timestamps there are no silences, and messages are packed greedily up to the budget instead.
3. `eval_split_index`: the latest `eval_frac` of sessions are held out, and the split is a single message index,
   so no message and no session can land in both train and eval.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

NS_PER_HOUR = 3_600_000_000_000


def silence_hours(timestamps: pd.Series) -> np.ndarray | None:
    """Hours since the previous message, per message (`inf` for the first); None when there are no timestamps.

    Missing timestamps among present ones count as no silence, so they never start a session on their own.
    """
    import numpy as np

    missing = timestamps.isna().to_numpy()
    if len(timestamps) == 0 or missing.all():
        return None
    if missing.any():
        logger.warning("%d messages have no timestamp; they never start a new session", int(missing.sum()))
    ns = timestamps.to_numpy(dtype="datetime64[ns]").astype("int64").astype("float64")
    ns[missing] = np.nan
    filled = np.fmax.accumulate(np.where(missing, -np.inf, ns))
    gaps = np.empty(len(ns))
    gaps[0] = np.inf
    gaps[1:] = np.diff(filled) / NS_PER_HOUR
    gaps[1:][missing[1:]] = 0.0
    return gaps


def merge_short_sessions(ranges: list[tuple[int, int]], gaps: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """Merge each session with fewer than `min_len` messages into its neighbour nearer in time.

    The distance to the previous session is the silence before the session's first message; to the next, the
    silence before the next session's first message. A merged session that is still short keeps merging.
    Only neighbours inside `ranges` count, so the first and last ranges never merge outwards.
    """
    out: list[list[int]] = []
    carry: int | None = None
    n = ranges[-1][1] if ranges else 0
    for start, end in ranges:
        if carry is not None:
            start, carry = carry, None
        if end - start >= min_len:
            out.append([start, end])
            continue
        left = gaps[start] if out else math.inf
        right = gaps[end] if end < n else math.inf
        if left == right == math.inf:
            out.append([start, end])
        elif left <= right:
            out[-1][1] = end
        else:
            carry = start
    return [(a, b) for a, b in out]


def session_ranges(gaps: np.ndarray | None, start: int, end: int, hours: float, min_len: int) -> list[tuple[int, int]]:
    """Sessions of messages `[start, end)`: split at silences of at least `hours`, short ones merged.

    Args:
        gaps (`np.ndarray`, *optional*): `silence_hours` of the whole table; None (no timestamps) gives one
            session, to be cut by token budget.
        start, end (`int`): the slice of the table to group (train or eval part).
        hours (`float`): the silence that starts a session.
        min_len (`int`): sessions with fewer messages merge into a neighbour.
    """
    import numpy as np

    if end <= start:
        return []
    if gaps is None:
        return [(start, end)]
    cuts = start + 1 + np.flatnonzero(gaps[start + 1 : end] >= hours)
    bounds = [start, *cuts.tolist(), end]
    return merge_short_sessions(list(zip(bounds[:-1], bounds[1:], strict=True)), gaps, min_len)


def eval_split_index(sessions: list[tuple[int, int]], eval_frac: float) -> int:
    """The first message index of the held-out part: the latest `eval_frac` of `sessions` (at least one).

    Returns the end of the last session (nothing held out) when `eval_frac` is 0 or there is a single session.
    """
    if not sessions:
        return 0
    n_eval = round(len(sessions) * eval_frac)
    if eval_frac > 0 and len(sessions) > 1:
        n_eval = min(max(n_eval, 1), len(sessions) - 1)
    else:
        n_eval = 0
    return sessions[-n_eval][0] if n_eval else sessions[-1][1]


def _pack_greedy(counts: np.ndarray, start: int, end: int, budget: int) -> list[tuple[int, int]]:
    out = []
    a, total = start, 0
    for i in range(start, end):
        c = int(counts[i])
        if i > a and total + c > budget:
            out.append((a, i))
            a, total = i, 0
        total += c
    out.append((a, end))
    return out


def split_long(
    counts: np.ndarray, gaps: np.ndarray | None, start: int, end: int, budget: int
) -> list[tuple[int, int]]:
    """Cut session `[start, end)` into parts whose summed `counts` fit `budget`.

    Args:
        counts (`np.ndarray`): tokens per message (template overhead included) for the whole table.
        gaps (`np.ndarray`, *optional*): `silence_hours` for the whole table; None packs greedily.
        budget (`int`): tokens available per part (chunk_size minus the system prefix).

    Returns:
        Consecutive ranges covering `[start, end)` in order. A single message over budget is its own range; the
        caller truncates it or reports it.
    """
    import numpy as np

    cum = np.concatenate([[0], np.cumsum(counts[start:end], dtype=np.int64)])  # cum[i] = tokens before start+i
    if cum[-1] <= budget:
        return [(start, end)]
    if gaps is None:
        return _pack_greedy(counts, start, end, budget)
    out = []
    stack = [(start, end)]
    while stack:
        a, b = stack.pop()
        if cum[b - start] - cum[a - start] <= budget or b - a == 1:
            out.append((a, b))
            continue
        inner = gaps[a + 1 : b]
        candidates = np.flatnonzero(inner == inner.max()) + a + 1
        mid = (cum[a - start] + cum[b - start]) / 2
        cut = int(candidates[np.argmin(np.abs(cum[candidates - start] - mid))])
        stack.append((cut, b))
        stack.append((a, cut))
    return out
