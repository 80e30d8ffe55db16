"""Repetition, presence and frequency penalties over a window of recent tokens (text-generation-webui semantics).

The window is the last `last_n` tokens of `input_ids` (prompt included, as in webui and llama.cpp); `last_n=0`
means the whole context. Each penalty is one gather/scatter over the window (no per-row loop, no `unique`), so
batch rows are handled together and the cost is O(window) plus one copy of the scores.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def recent_tokens(input_ids: torch.LongTensor, last_n: int) -> torch.LongTensor:
    """The last `last_n` columns of `input_ids` (all of them when `last_n` is 0)."""
    return input_ids if last_n == 0 else input_ids[:, -last_n:]


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
        window = recent_tokens(input_ids, self.last_n)  # (B, W)
        # scatter_ writes the same value for repeated ids, so each seen id is penalised once.
        return scores + torch.zeros_like(scores).scatter_(1, window, -self.penalty)


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
        window = recent_tokens(input_ids, self.last_n)  # (B, W)
        penalties = torch.full(window.shape, -self.penalty, dtype=scores.dtype, device=scores.device)
        return scores.scatter_add(1, window, penalties)
