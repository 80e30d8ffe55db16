"""Bounding the history a prompt carries to what the model can take.

Why: a channel context or an API caller can hand over far more history than the model's context window (a 58k-token
history once made `author_probabilities` try to allocate 64 GB). The prompt, plus the reply it makes room for, must
fit the window; the oldest turns go first, as a reader scrolling up would lose them. The prompt is re-rendered for
every candidate cut rather than estimated from per-message counts, because with `content_prefix` a message's turn
(user or assistant) depends on its position, so dropping one turn changes the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cloneus.errors import CloneusError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Tokenizers without a recorded limit report a huge sentinel (transformers' VERY_LARGE_INTEGER, 1e30).
PLAUSIBLE_CONTEXT_TOKENS = 10_000_000


def context_tokens(tokenizer: Any, model_context: int | None, fallback: int) -> int:
    """The model's context window in tokens: the smaller of what the model config and the tokenizer record.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): its `model_max_length`, when it is a real limit.
        model_context (`int`, *optional*): the model's `max_position_embeddings`, when the backend knows it.
        fallback (`int`): used when neither is known (the training `chunk_size`, the longest text training saw).
    """
    limits = [n for n in (model_context, tokenizer.model_max_length) if n and n < PLAUSIBLE_CONTEXT_TOKENS]
    return int(min(limits)) if limits else fallback


def fit_history(
    history: Sequence[T], render: Callable[[Sequence[T]], str], count: Callable[[str], int], budget: int
) -> list[T]:
    """The longest tail of `history` whose rendered prompt is at most `budget` tokens.

    Args:
        history (`Sequence`): turns, oldest first.
        render (`Callable`): turns → the prompt text.
        count (`Callable[[str], int]`): the number of tokens of a text.
        budget (`int`): the most prompt tokens allowed.

    Raises:
        CloneusError: even the prompt without any history is over the budget (system prompt or seed too long).
    """
    history = list(history)
    if count(render(history)) <= budget:
        return history
    empty = count(render([]))
    if empty > budget:
        raise CloneusError(
            f"the prompt without any chat history is {empty} tokens, over the {budget} the model's context leaves "
            "after the reply budget; shorten the seed text or the system prompt, or lower max_new_tokens"
        )
    lo, hi = 1, len(history)  # invariant: dropping `hi` turns fits, dropping `lo - 1` does not
    while lo < hi:
        mid = (lo + hi) // 2
        if count(render(history[mid:])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    logger.info("dropped the %d oldest of %d turns to fit %d prompt tokens", hi, len(history), budget)
    return history[hi:]
