"""Repetition, presence and frequency penalties over a window of recent tokens (text-generation-webui semantics).

The window is the last `last_n` tokens of `input_ids` (prompt included, as in webui and llama.cpp); `last_n=0`
means the whole context. Counting is one `scatter_add` over the window, so the cost is O(window + vocab) per step
and batch rows are handled together.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def recent_tokens(input_ids: torch.LongTensor, last_n: int) -> torch.LongTensor:
    """The last `last_n` columns of `input_ids` (all of them when `last_n` is 0)."""
    return input_ids if last_n == 0 else input_ids[:, -last_n:]


def token_counts(input_ids: torch.LongTensor, scores: torch.FloatTensor, last_n: int) -> torch.FloatTensor:
    """How often each vocabulary id occurs in the window, per row: `(B, V)` in the dtype of `scores`."""
    window = recent_tokens(input_ids, last_n)  # (B, W)
    ones = torch.ones(window.shape, dtype=scores.dtype, device=scores.device)
    return torch.zeros_like(scores).scatter_add_(1, window, ones)  # (B, V)


def _check_window(last_n: int) -> None:
    if last_n < 0:
        raise ValueError(f"range={last_n!r} is negative; use 0 for the whole context or a positive token count")


class RepetitionPenalty(LogitsProcessor):
    """Divide positive logits (multiply negative ones) of every token seen in the window by `penalty`.

    Args:
        penalty (`float`): > 0; 1.0 leaves the logits unchanged, > 1 discourages repeats.
        last_n (`int`): window size in tokens; 0 is the whole context.
    """

    def __init__(self, penalty: float, last_n: int):
        if not penalty > 0:
            raise ValueError(f"repetition_penalty={penalty!r} must be > 0; use 1.0 to disable it")
        _check_window(last_n)
        self.penalty = penalty
        self.last_n = last_n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        window = recent_tokens(input_ids, self.last_n)  # (B, W)
        seen = scores.gather(1, window)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, window, seen)


class PresencePenalty(LogitsProcessor):
    """Subtract `penalty` once from the logit of every token seen in the window (OpenAI's presence penalty).

    Args:
        penalty (`float`): subtracted amount; negative values encourage repeats.
        last_n (`int`): window size in tokens; 0 is the whole context.
    """

    def __init__(self, penalty: float, last_n: int):
        _check_window(last_n)
        self.penalty = penalty
        self.last_n = last_n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = token_counts(input_ids, scores, self.last_n) > 0
        return scores - self.penalty * seen.to(scores.dtype)


class FrequencyPenalty(LogitsProcessor):
    """Subtract `penalty` times the number of occurrences in the window (OpenAI's frequency penalty).

    Args:
        penalty (`float`): subtracted per occurrence; negative values encourage repeats.
        last_n (`int`): window size in tokens; 0 is the whole context.
    """

    def __init__(self, penalty: float, last_n: int):
        _check_window(last_n)
        self.penalty = penalty
        self.last_n = last_n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores - self.penalty * token_counts(input_ids, scores, self.last_n)
