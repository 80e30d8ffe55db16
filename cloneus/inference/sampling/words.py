"""Word rules as token ids: banned words (`bad_words_ids`) and weighted words (`sequence_bias`) for
`model.generate`, and single-token `logit_bias` for OpenAI-compatible servers.

A word has several tokenisations: BPE vocabularies spell " pizza" (after a space, as mid-sentence) differently
from "pizza" (at the start of a message), and "Pizza" differently again. A rule applies to every one of them,
so a ban cannot be dodged by the word's position or case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cloneus.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from cloneus.inference.sampling.options import SamplingOptions

LOGIT_BAN = -100.0  # the OpenAI API's floor for logit_bias: the token is never picked


def spellings(word: str) -> list[str]:
    """`word` as typed, lower-case and capitalised, each with and without a leading space."""
    word = word.strip()
    forms = dict.fromkeys([word, word.lower(), word[:1].upper() + word[1:]])
    return [prefix + form for form in forms for prefix in ("", " ")]


def token_variants(tokenizer: PreTrainedTokenizerBase, word: str) -> list[list[int]]:
    """The distinct token-id sequences of every spelling of `word`."""
    seen: dict[tuple[int, ...], None] = {}
    for spelling in spellings(word):
        ids = tuple(tokenizer.encode(spelling, add_special_tokens=False))
        if ids:
            seen.setdefault(ids)
    return [list(ids) for ids in seen]


def bad_words_ids(tokenizer: PreTrainedTokenizerBase, words: Iterable[str]) -> list[list[int]]:
    return [ids for word in words for ids in token_variants(tokenizer, word)]


def sequence_bias(tokenizer: PreTrainedTokenizerBase, bias: Mapping[str, float]) -> list[list[Any]]:
    """`generate(sequence_bias=...)` in its list form: `[[token ids, bias], ...]`."""
    return [[ids, float(value)] for word, value in bias.items() for ids in token_variants(tokenizer, word)]


def word_generation_kwargs(opts: SamplingOptions, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The `model.generate` keyword arguments that apply `opts`' word rules (none when it has none)."""
    kwargs: dict[str, Any] = {}
    if opts.banned_words:
        kwargs["bad_words_ids"] = bad_words_ids(tokenizer, opts.banned_words)
    if opts.word_bias:
        kwargs["sequence_bias"] = sequence_bias(tokenizer, opts.word_bias)
    return kwargs


def logit_bias(opts: SamplingOptions, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """`logit_bias` (token id → bias) for the word rules of `opts`. A server biases single tokens only, so each
    word's single-token spellings are used.

    Raises:
        `ConfigError`: a word with no single-token spelling (banning or weighting its first token would hit
            every other word that starts with it); the local backend handles such words.
    """
    rules = {word: LOGIT_BAN for word in opts.banned_words} | dict(opts.word_bias)
    out: dict[str, float] = {}
    too_long = []
    for word, value in rules.items():
        singles = [ids[0] for ids in token_variants(tokenizer, word) if len(ids) == 1]
        if not singles:
            too_long.append(word)
        out |= {str(token): value for token in singles}
    if too_long:
        raise ConfigError(
            f"word rules {too_long}: an OpenAI-compatible server biases single tokens only (logit_bias), and these "
            "have no single-token spelling; use shorter words or the local backend"
        )
    return out
