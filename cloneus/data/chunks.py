"""Tokenize conversations once and cut them into chunks of at most `chunk_size` tokens, with loss labels.

Two exact ways to get there, picked by `ChatFormatter`'s layout:

- **Per message** (`cloneus.data.turn_tokens.MessageTokens`): when every turn opens with a special token, each
  message is tokenized once and a chunk is the system prefix's tokens plus a slice of one flat array.
- **Per session** (`tokenize_sessions`, here): otherwise (`tag_only`, `content_prefix`) each session is rendered and
  tokenized with offsets. Labels come from the token offsets against `Rendered.label_spans`. A session over the
  limit is cut at message boundaries where a token starts exactly at the boundary character; a part whose
  boundary falls inside a token is rendered and tokenized on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloneus.data.sessions import split_long

if TYPE_CHECKING:
    import numpy as np

    from cloneus.data.formatting import ChatFormatter

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Called with (message index, its token count) when one message alone exceeds the budget. It raises
# (dataset.long_messages: error), or returns True to keep the message cut to fit, False to drop it.
TooLong = Callable[[int, int], bool]


@dataclass
class Chunks:
    """Tokenized chunks as flat arrays: row `i` is `ids[offsets[i]:offsets[i + 1]]`.

    Args:
        ids (`np.ndarray`): int32 token ids of all rows, concatenated.
        labels (`np.ndarray`): int32, the id where the token gets loss, else -100.
        offsets (`np.ndarray`): int64 row boundaries, `len(rows) + 1` entries.
        ranges (`list[tuple[int, int]]`): the message range `[start, end)` of each row.
        truncated (`int`): rows holding a single message cut to fit.
        too_long_dropped (`int`): single messages over the budget that were left out.
    """

    ids: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    ranges: list[tuple[int, int]]
    truncated: int = 0
    too_long_dropped: int = 0

    @property
    def lengths(self) -> np.ndarray:
        import numpy as np

        return np.diff(self.offsets)


def concat_rows(
    rows: list[tuple[np.ndarray, np.ndarray]], ranges: list[tuple[int, int]], truncated: int, dropped: int = 0
) -> Chunks:
    import numpy as np

    lengths = np.array([len(ids) for ids, _ in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    empty = np.zeros(0, dtype=np.int32)
    ids = np.concatenate([r[0] for r in rows]) if rows else empty
    labels = np.concatenate([r[1] for r in rows]) if rows else empty
    ids, labels = ids.astype(np.int32, copy=False), labels.astype(np.int32, copy=False)
    return Chunks(ids, labels, offsets, ranges, truncated, dropped)


def label_mask(token_starts: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Whether each token (by the character it starts at) lies inside one of the sorted, disjoint `spans`."""
    import numpy as np

    if not spans:
        return np.zeros(len(token_starts), dtype=bool)
    bounds = np.asarray(spans, dtype=np.int64)
    idx = np.searchsorted(bounds[:, 0], token_starts, side="right") - 1
    return (idx >= 0) & (token_starts < bounds[np.maximum(idx, 0), 1])


@dataclass
class _Session:
    """One rendered, tokenized message range, as needed to cut it."""

    start: int
    end: int
    ids: np.ndarray
    labels: np.ndarray
    turn_starts: np.ndarray  # token index where each message's turn starts, plus the total
    aligned: np.ndarray  # whether a token starts exactly at each message boundary


def _tokenize_ranges(
    formatter: ChatFormatter, authors: Sequence[str], texts: Sequence[str], ranges: list[tuple[int, int]]
) -> list[_Session]:
    import numpy as np

    rendered = [formatter.render(list(zip(authors[a:b], texts[a:b], strict=True))) for a, b in ranges]
    enc = formatter.tokenizer([r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (a, b), r, ids, offsets in zip(ranges, rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
        ids = np.asarray(ids, dtype=np.int32)
        token_starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
        labels = np.where(label_mask(token_starts, r.label_spans), ids, IGNORE_INDEX).astype(np.int32)
        bounds = np.asarray([s for s, _ in r.message_spans] + [len(r.text)], dtype=np.int64)
        turn_starts = np.searchsorted(token_starts, bounds)
        turn_starts[-1] = len(ids)
        padded = np.append(token_starts, len(r.text))
        aligned = padded[turn_starts] == bounds
        out.append(_Session(a, b, ids, labels, turn_starts, aligned))
    return out


def tokenize_sessions(
    formatter: ChatFormatter,
    authors: Sequence[str],
    texts: Sequence[str],
    gaps: np.ndarray | None,
    sessions: list[tuple[int, int]],
    chunk_size: int,
    too_long: TooLong,
) -> Chunks:
    """Render and tokenize each session with offsets, cutting the ones over `chunk_size` (see module docstring)."""
    import numpy as np

    rows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    truncated = dropped = 0
    todo = list(sessions)
    slice_ok = formatter.position_independent
    while todo:
        batch, todo = todo[:256], todo[256:]
        for s in _tokenize_ranges(formatter, authors, texts, batch):
            if len(s.ids) <= chunk_size:
                rows[(s.start, s.end)] = (s.ids, s.labels)
                continue
            n_prefix = int(s.turn_starts[0])
            budget = chunk_size - n_prefix
            counts = np.diff(s.turn_starts)
            local_gaps = None if gaps is None else gaps[s.start : s.end]
            n_messages = s.end - s.start
            for pa, pb in split_long(counts, local_gaps, 0, n_messages, budget):
                whole = pa == 0 and pb == n_messages
                if not (whole or (slice_ok and s.aligned[pa] and s.aligned[pb])):
                    todo.append((s.start + pa, s.start + pb))
                    continue
                lo, hi = int(s.turn_starts[pa]), int(s.turn_starts[pb])
                if pb - pa == 1 and hi - lo > budget:
                    if not too_long(s.start + pa, hi - lo):
                        dropped += 1
                        continue
                    hi, truncated = lo + budget, truncated + 1
                ids = np.concatenate([s.ids[:n_prefix], s.ids[lo:hi]])
                labels = np.concatenate([s.labels[:n_prefix], s.labels[lo:hi]])
                rows[(s.start + pa, s.start + pb)] = (ids, labels)
    ranges = sorted(rows)
    return concat_rows([rows[r] for r in ranges], ranges, truncated, dropped)
