"""Surface statistics of a set of messages: what a reader notices before reading closely.

Generated replies are compared with the member's real held-out messages on the same measures, so a clone that
writes twice as long, never asks a question or copies lines from its context shows up as a number.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence

# Unicode pictographs and symbols, plus `:name:` shortcodes (cleaning turns custom Discord emoji into those).
EMOJI = re.compile(r"[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]|:[A-Za-z0-9_+-]{2,}:")
LINK = re.compile(r"https?://\S+|\bwww\.\S+", re.IGNORECASE)
MIN_CAPS_LETTERS = 3  # "I" or "OK" alone is not shouting


def normalise(text: str) -> str:
    """Lowercase with runs of whitespace collapsed: the form two messages must share to count as a copy."""
    return " ".join(text.lower().split())


def _is_caps(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= MIN_CAPS_LETTERS and all(c.isupper() for c in letters)


def _is_lowercase(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and all(c.islower() for c in letters)


def distinct_2(texts: Iterable[str]) -> float | None:
    """Distinct word bigrams over all bigrams (bigrams never cross messages); None when there are none."""
    bigrams = []
    for text in texts:
        words = text.lower().split()
        bigrams += zip(words, words[1:], strict=False)
    return len(set(bigrams)) / len(bigrams) if bigrams else None


def _percentile(values: list[int], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy for a list this small."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def surface_stats(
    texts: Sequence[str],
    contexts: Sequence[Sequence[str]] | None = None,
    train_texts: set[str] | None = None,
) -> dict[str, float | int | None]:
    """Length, style-marker rates, distinct-2 and copy rates of `texts`.

    Args:
        texts (`Sequence[str]`): the messages.
        contexts (`Sequence[Sequence[str]]`, *optional*): per message, the texts it was written after; a message
            equal (after `normalise`) to one of them counts in `copy_context_rate`.
        train_texts (`set[str]`, *optional*): `normalise`d training messages, for `copy_train_rate`.

    Returns:
        `dict`: `n`, `words_mean`, `words_median`, `words_p90`, and the fraction of messages with an emoji, a link,
        a question mark, all capitals, only lowercase letters; `distinct_2`; the copy rates (None when the input
        for them was not given). Empty `texts` give `n` 0 and None elsewhere.
    """
    n = len(texts)
    keys = ("words_mean", "words_median", "words_p90", "emoji_rate", "link_rate", "question_rate", "caps_rate")
    keys += ("lowercase_rate", "distinct_2", "copy_context_rate", "copy_train_rate")
    if n == 0:
        return {"n": 0, **dict.fromkeys(keys)}
    lengths = [len(t.split()) for t in texts]
    normal = [normalise(t) for t in texts]
    stats: dict[str, float | int | None] = {
        "n": n,
        "words_mean": statistics.fmean(lengths),
        "words_median": statistics.median(lengths),
        "words_p90": _percentile(lengths, 0.9),
        "emoji_rate": sum(bool(EMOJI.search(t)) for t in texts) / n,
        "link_rate": sum(bool(LINK.search(t)) for t in texts) / n,
        "question_rate": sum("?" in t for t in texts) / n,
        "caps_rate": sum(_is_caps(t) for t in texts) / n,
        "lowercase_rate": sum(_is_lowercase(t) for t in texts) / n,
        "distinct_2": distinct_2(texts),
        "copy_context_rate": None,
        "copy_train_rate": None,
    }
    if contexts is not None:
        if len(contexts) != n:
            raise ValueError(f"got {len(contexts)} contexts for {n} texts")
        copied = sum(bool(t) and t in {normalise(c) for c in ctx} for t, ctx in zip(normal, contexts, strict=True))
        stats["copy_context_rate"] = copied / n
    if train_texts is not None:
        stats["copy_train_rate"] = sum(bool(t) and t in train_texts for t in normal) / n
    return stats
