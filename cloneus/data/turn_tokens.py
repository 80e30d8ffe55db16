"""Per-message tokenization: every message's turn tokenized once, for all cutoff groupings.

When every turn opens with a special token (ChatML's `<|im_start|>`, Llama-3's `<|start_header_id|>`) and renders
the same wherever it sits, the tokens of a conversation are exactly the concatenation of its turns' tokens: special
tokens are split off before the model's pre-tokenizer runs, so no token can straddle a turn boundary. A chunk is
then the system prefix's tokens plus a slice of one flat array, and a turn is labelled as a whole or not at all,
which is exactly what the formatter's label spans say.

Going one step further, a turn `opening + text + closing` is assembled from the opening's tokens (one tokenization
per author), the text's tokens and the closing's tokens, when tokenizing them apart gives the same tokens as
tokenizing them together. The closing starts with a special token, so only the opening/text boundary needs a check:
the tokenizer must have no normalizer, and its pre-tokenizer must split the joined string exactly at the boundary
and pre-tokenize the text the same on its own. That is checked for every distinct (end of opening, start of text)
pair in the data; messages whose pair fails are tokenized as whole turns. Tokenizing only the texts makes the
pipeline's tokenization cost that of the bare messages, plus a few numpy copies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloneus.data.chunks import IGNORE_INDEX, Chunks, TooLong

if TYPE_CHECKING:
    import numpy as np

    from cloneus.data.formatting import ChatFormatter

logger = logging.getLogger(__name__)

TOKENIZE_BATCH = 20_000
# Characters at the start of a text that, with the end of the opening, decide whether the pre-tokenizer splits at
# the join: pre-tokenizer regexes look at whitespace runs and the character classes on either side of a boundary.
TEXT_CONTEXT_CHARS = 2


def tokenize_flat(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of all `texts` concatenated (int32) and the count per text, in batches to bound memory.

    Uses the fast tokenizer's backend directly: no offsets or attention masks are computed or converted.
    """
    import numpy as np

    backend = tokenizer.backend_tokenizer
    flats, counts = [], []
    for i in range(0, len(texts), TOKENIZE_BATCH):
        encodings = backend.encode_batch_fast(list(texts[i : i + TOKENIZE_BATCH]), add_special_tokens=False)
        ids = [e.ids for e in encodings]
        counts.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        flats.append(np.fromiter((t for row in ids for t in row), dtype=np.int32, count=int(counts[-1].sum())))
    if not flats:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    return np.concatenate(flats), np.concatenate(counts)


def _special_tokens(tokenizer: Any) -> list[str]:
    return [
        t.content
        for t in tokenizer.added_tokens_decoder.values()
        if t.special and not t.lstrip and not t.rstrip and not t.normalized
    ]


def turns_are_separable(formatter: ChatFormatter, authors: Sequence[str]) -> bool:
    """Whether per-message tokenization is exact: every turn opens with a special token that eats no whitespace."""
    if not formatter.position_independent:
        return False
    specials = _special_tokens(formatter.tokenizer)
    return bool(specials) and all(
        any(formatter.wrap(0, author)[0].startswith(s) for s in specials) for author in authors
    )


def _splits_cleanly(pre_tokenizer: Any, before: str, text: str) -> bool:
    """The pre-tokenizer cuts `before + text` at the join and pre-tokenizes `text` as it does alone."""
    joined = pre_tokenizer.pre_tokenize_str(before + text)
    cut = len(before)
    after = [(piece, (s - cut, e - cut)) for piece, (s, e) in joined if s >= cut]
    return all(e <= cut for _, (s, e) in joined if s < cut) and after == pre_tokenizer.pre_tokenize_str(text)


def _boundary_context(opening: str, specials: list[str]) -> str:
    """The end of an opening that can affect how its text is pre-tokenized: its trailing whitespace and the
    character before it, after the last special token (special tokens are split off before pre-tokenizing)."""
    end = max((opening.rfind(s) + len(s) for s in specials if s in opening), default=0)
    tail = opening[end:]
    stripped = tail.rstrip()
    return tail[max(len(stripped) - 1, 0) :]


def _composable(tokenizer: Any, openings: list[str], closing: str, author_idx: np.ndarray, texts: Sequence[str]):
    """Per message, whether its turn can be assembled from separately tokenized opening, text and closing."""
    import numpy as np
    import pandas as pd

    backend = tokenizer.backend_tokenizer
    specials = _special_tokens(tokenizer)
    if backend.normalizer is not None or backend.pre_tokenizer is None:
        return np.zeros(len(texts), dtype=bool)
    if closing and not any(closing.startswith(s) for s in specials):
        return np.zeros(len(texts), dtype=bool)
    contexts = np.array([_boundary_context(o, specials) for o in openings] or [""], dtype=object)
    keys = pd.Series(contexts[author_idx]) + "\0" + pd.Series(texts, dtype=object).str[:TEXT_CONTEXT_CHARS]
    codes, uniques = pd.factorize(keys)
    ok = [not text or _splits_cleanly(backend.pre_tokenizer, before, text) for before, text in uniques.str.split("\0")]
    return np.asarray(ok, dtype=bool)[codes] if len(texts) else np.zeros(0, dtype=bool)


def _starts(counts: np.ndarray) -> np.ndarray:
    """Exclusive prefix sum: where each piece of `counts` starts."""
    import numpy as np

    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _scatter(out: np.ndarray, dest: np.ndarray, src: np.ndarray, src_starts: np.ndarray, lengths: np.ndarray):
    """`out[dest[i] : dest[i] + lengths[i]] = src[src_starts[i] : ... + lengths[i]]` for every i, vectorised."""
    import numpy as np

    total = int(lengths.sum())
    if total == 0:
        return
    piece = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[dest[piece] + within] = src[src_starts[piece] + within]


def _assemble(
    open_ids: np.ndarray,
    open_starts: np.ndarray,
    open_lens: np.ndarray,
    close_ids: np.ndarray,
    author_idx: np.ndarray,
    text_ids: np.ndarray,
    text_counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of `opening[author] + text + closing` for a batch of messages, from their separate tokens."""
    import numpy as np

    n = len(author_idx)
    o_len = open_lens[author_idx]
    counts = o_len + text_counts + len(close_ids)
    starts = _starts(counts)
    out = np.empty(int(counts.sum()), dtype=np.int32)
    _scatter(out, starts, open_ids, open_starts[author_idx], o_len)
    _scatter(out, starts + o_len, text_ids, _starts(text_counts), text_counts)
    close_lens = np.full(n, len(close_ids), dtype=np.int64)
    _scatter(out, starts + o_len + text_counts, close_ids, np.zeros(n, dtype=np.int64), close_lens)
    return out, counts


@dataclass
class MessageTokens:
    """Every message's whole turn, tokenized once; see the module docstring for why that is exact.

    Args:
        prefix_ids (`np.ndarray`): the system prefix's tokens, repeated at the start of every chunk.
        ids (`np.ndarray`): all turns' tokens, concatenated in message order.
        counts (`np.ndarray`): tokens per message.
        labelled (`np.ndarray`): bool per message, whether its turn gets loss.
        composed (`int`): messages assembled from separately tokenized opening, text and closing.
    """

    prefix_ids: np.ndarray
    ids: np.ndarray
    counts: np.ndarray
    labelled: np.ndarray
    composed: int = 0

    @classmethod
    def build(cls, formatter: ChatFormatter, authors: Sequence[str], texts: Sequence[str]) -> MessageTokens:
        import numpy as np

        tokenizer = formatter.tokenizer
        names = sorted(set(authors))
        index = {a: i for i, a in enumerate(names)}
        author_idx = np.fromiter((index[a] for a in authors), dtype=np.int64, count=len(authors))
        openings = [formatter.wrap(0, a)[0] for a in names]
        closing = formatter.wrap(0, names[0])[1] if names else ""
        assert all(formatter.wrap(0, a)[1] == closing for a in names), "turn closings differ between authors"
        open_ids, open_lens = tokenize_flat(tokenizer, openings)
        open_starts = _starts(open_lens)
        close_ids = tokenize_flat(tokenizer, [closing])[0] if closing else open_ids[:0]
        composable = _composable(tokenizer, openings, closing, author_idx, texts)

        ids_parts, count_parts = [], []
        for lo in range(0, len(texts), TOKENIZE_BATCH):
            hi = min(lo + TOKENIZE_BATCH, len(texts))
            ok, batch_idx, batch_texts = composable[lo:hi], author_idx[lo:hi], texts[lo:hi]
            text_ids, text_counts = tokenize_flat(tokenizer, [t for t, c in zip(batch_texts, ok, strict=True) if c])
            composed, composed_counts = _assemble(
                open_ids, open_starts, open_lens, close_ids, batch_idx[ok], text_ids, text_counts
            )
            whole = [openings[a] + batch_texts[i] + closing for i, a in enumerate(batch_idx.tolist()) if not ok[i]]
            whole_ids, whole_counts = tokenize_flat(tokenizer, whole)
            counts = np.empty(hi - lo, dtype=np.int64)
            counts[ok], counts[~ok] = composed_counts, whole_counts
            out = np.empty(int(counts.sum()), dtype=np.int32)
            starts = _starts(counts)
            _scatter(out, starts[ok], composed, _starts(composed_counts), composed_counts)
            _scatter(out, starts[~ok], whole_ids, _starts(whole_counts), whole_counts)
            ids_parts.append(out)
            count_parts.append(counts)
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int32)
        all_counts = np.concatenate(count_parts) if count_parts else np.zeros(0, dtype=np.int64)
        prefix_ids = tokenize_flat(tokenizer, [formatter.prefix])[0] if formatter.prefix else ids[:0]
        labelled_by_author = np.array([formatter.is_labelled(a) for a in names], dtype=bool)
        n_composed = int(composable.sum())
        logger.debug("%d of %d turns assembled from separately tokenized text", n_composed, len(texts))
        return cls(prefix_ids, ids, all_counts, labelled_by_author[author_idx], n_composed)

    def chunk(self, ranges: list[tuple[int, int]], budget: int, too_long: TooLong) -> Chunks:
        """Assemble message ranges (already cut to fit `budget`) into rows, each led by the system prefix.

        Rows are written straight into two preallocated arrays: on a million messages every extra copy of the
        token array costs about 100 MB.
        """
        import numpy as np

        starts = np.concatenate([[0], np.cumsum(self.counts)])
        bounds = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
        spans = starts[bounds[:, 1]] - starts[bounds[:, 0]]
        keep = np.ones(len(bounds), dtype=bool)
        for row in np.flatnonzero(spans > budget).tolist():
            keep[row] = too_long(int(bounds[row, 0]), int(spans[row]))
        bounds, spans = bounds[keep], spans[keep]
        ranges = [r for r, k in zip(ranges, keep.tolist(), strict=True) if k]
        n_prefix = len(self.prefix_ids)
        lengths = n_prefix + np.minimum(spans, budget)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.empty(int(offsets[-1]), dtype=np.int32)
        labels = np.empty_like(ids)
        token_labelled = np.repeat(self.labelled, self.counts)
        for row, (a, length) in enumerate(zip(bounds[:, 0].tolist(), lengths.tolist(), strict=True)):
            out, lo = int(offsets[row]), int(starts[a])
            body = length - n_prefix
            ids[out : out + n_prefix] = self.prefix_ids
            labels[out : out + n_prefix] = IGNORE_INDEX
            ids[out + n_prefix : out + length] = self.ids[lo : lo + body]
            labels[out + n_prefix : out + length] = np.where(
                token_labelled[lo : lo + body], self.ids[lo : lo + body], IGNORE_INDEX
            )
        return Chunks(ids, labels, offsets, list(ranges), int((spans > budget).sum()), int((~keep).sum()))
