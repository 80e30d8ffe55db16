"""Tokenize conversations once and cut them into chunks of at most `chunk_size` tokens, with loss labels.

Two exact ways to get there, picked by `ChatFormatter`'s layout:

- **Per message** (`MessageTokens`): when every turn opens with a special token (ChatML's `<|im_start|>`, Llama-3's
  `<|start_header_id|>`) and renders the same wherever it sits, tokenizing each message's turn on its own gives
  exactly the tokens of any conversation built from them: special tokens are split off before the model's
  pre-tokenizer runs, so no token can straddle a turn boundary. Each message is then tokenized once, in large
  batches, for every cutoff grouping, and a chunk is the system prefix's tokens plus a slice of one flat array.
  A turn is labelled as a whole or not at all, which is exactly what the formatter's label spans say.
- **Per session** (`tokenize_sessions`): otherwise (`tag_only`, `content_prefix`) each session is rendered and
  tokenized with offsets. Labels come from the token offsets against `Rendered.label_spans`. A session over the
  limit is cut at message boundaries where a token starts exactly at the boundary character; a part whose
  boundary falls inside a token is rendered and tokenized on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from cloneus.data.sessions import split_long

if TYPE_CHECKING:
    import numpy as np

    from cloneus.data.formatting import ChatFormatter

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TOKENIZE_BATCH = 20_000
# Called with (message index, its token count) when one message alone exceeds the budget; raises unless
# truncation is allowed.
TooLong = Callable[[int, int], None]


@dataclass
class Chunks:
    """Tokenized chunks as flat arrays: row `i` is `ids[offsets[i]:offsets[i + 1]]`.

    Args:
        ids (`np.ndarray`): int32 token ids of all rows, concatenated.
        labels (`np.ndarray`): int32, the id where the token gets loss, else -100.
        offsets (`np.ndarray`): int64 row boundaries, `len(rows) + 1` entries.
        ranges (`list[tuple[int, int]]`): the message range `[start, end)` of each row.
        truncated (`int`): rows holding a single message cut to fit.
    """

    ids: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    ranges: list[tuple[int, int]]
    truncated: int = 0

    @property
    def lengths(self) -> np.ndarray:
        import numpy as np

        return np.diff(self.offsets)


def _concat_rows(rows: list[tuple[np.ndarray, np.ndarray]], ranges: list[tuple[int, int]], truncated: int) -> Chunks:
    import numpy as np

    lengths = np.array([len(ids) for ids, _ in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    empty = np.zeros(0, dtype=np.int32)
    ids = np.concatenate([r[0] for r in rows]) if rows else empty
    labels = np.concatenate([r[1] for r in rows]) if rows else empty
    return Chunks(ids.astype(np.int32), labels.astype(np.int32), offsets, ranges, truncated)


def tokenize_flat(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of all `texts` concatenated (int32) and the count per text, in batches to bound memory."""
    import numpy as np

    flats, counts = [], []
    for i in range(0, len(texts), TOKENIZE_BATCH):
        ids = tokenizer(list(texts[i : i + TOKENIZE_BATCH]), add_special_tokens=False)["input_ids"]
        counts.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        flats.append(np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(counts[-1].sum())))
    if not flats:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    return np.concatenate(flats), np.concatenate(counts)


def turns_are_separable(formatter: ChatFormatter, authors: Sequence[str]) -> bool:
    """Whether per-message tokenization is exact: every turn opens with a special token that eats no whitespace."""
    if not formatter.position_independent:
        return False
    tokenizer = formatter.tokenizer
    specials = [
        t.content
        for t in tokenizer.added_tokens_decoder.values()
        if t.special and not t.lstrip and not t.rstrip and not t.normalized
    ]
    return bool(specials) and all(
        any(formatter.wrap(0, author)[0].startswith(s) for s in specials) for author in authors
    )


@dataclass
class MessageTokens:
    """Every message's whole turn, tokenized once; see the module docstring for why that is exact.

    Args:
        prefix_ids (`np.ndarray`): the system prefix's tokens, repeated at the start of every chunk.
        ids (`np.ndarray`): all turns' tokens, concatenated in message order.
        counts (`np.ndarray`): tokens per message.
        labelled (`np.ndarray`): bool per message, whether its turn gets loss.
    """

    prefix_ids: np.ndarray
    ids: np.ndarray
    counts: np.ndarray
    labelled: np.ndarray

    @classmethod
    def build(cls, formatter: ChatFormatter, authors: Sequence[str], texts: Sequence[str]) -> MessageTokens:
        import numpy as np

        wraps = {a: formatter.wrap(0, a) for a in set(authors)}
        turns = [wraps[a][0] + t + wraps[a][1] for a, t in zip(authors, texts, strict=True)]
        ids, counts = tokenize_flat(formatter.tokenizer, turns)
        del turns
        prefix_ids = tokenize_flat(formatter.tokenizer, [formatter.prefix])[0] if formatter.prefix else ids[:0]
        labelled_by_author = {a: formatter.is_labelled(a) for a in wraps}
        labelled = np.fromiter((labelled_by_author[a] for a in authors), dtype=bool, count=len(authors))
        return cls(prefix_ids, ids, counts, labelled)

    def chunk(self, ranges: list[tuple[int, int]], budget: int, too_long: TooLong) -> Chunks:
        """Assemble message ranges (already cut to fit `budget`) into rows, each led by the system prefix."""
        import numpy as np

        starts = np.concatenate([[0], np.cumsum(self.counts)])
        label_flat = np.where(np.repeat(self.labelled, self.counts), self.ids, IGNORE_INDEX).astype(np.int32)
        prefix_labels = np.full(len(self.prefix_ids), IGNORE_INDEX, dtype=np.int32)
        rows, truncated = [], 0
        for a, b in ranges:
            lo, hi = int(starts[a]), int(starts[b])
            ids, labels = self.ids[lo:hi], label_flat[lo:hi]
            if hi - lo > budget:
                too_long(a, hi - lo)
                ids, labels, truncated = ids[:budget], labels[:budget], truncated + 1
            rows.append((np.concatenate([self.prefix_ids, ids]), np.concatenate([prefix_labels, labels])))
        return _concat_rows(rows, ranges, truncated)


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
    truncated = 0
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
            for pa, pb in split_long(counts, local_gaps, 0, s.end - s.start, budget):
                lo, hi = int(s.turn_starts[pa]), int(s.turn_starts[pb])
                if pb - pa == 1 and hi - lo > budget:
                    too_long(s.start + pa, hi - lo)
                    hi, truncated = lo + budget, truncated + 1
                elif not (slice_ok and s.aligned[pa] and s.aligned[pb]):
                    todo.append((s.start + pa, s.start + pb))
                    continue
                ids = np.concatenate([s.ids[:n_prefix], s.ids[lo:hi]])
                labels = np.concatenate([s.labels[:n_prefix], s.labels[lo:hi]])
                rows[(s.start + pa, s.start + pb)] = (ids, labels)
    ranges = sorted(rows)
    return _concat_rows([rows[r] for r in ranges], ranges, truncated)
