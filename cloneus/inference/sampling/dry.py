"""DRY ("Don't Repeat Yourself", p-e-w) as a vectorised logits processor.

webui's reference walks every earlier occurrence of the last token in Python and extends each match backwards,
which is O(window x match) Python per step. Here all candidate positions move together: step k compares the
token k places before every candidate with the token k places before the end, for the whole `(B, window)` tensor
at once. Matches die out after a few steps in real text, so the loop usually stops after 2-3 tensor ops, and it
never runs more than `MAX_MATCH_TOKENS` times. Semantics match webui's `DRYLogitsProcessor`: the same match
lengths (capped at 50), the same breakers rule, and a penalty of `multiplier * base ** (length - allowed_length)`
on the token that followed the longest match.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from cloneus.inference.sampling.penalties import recent_tokens

# webui caps a match at 50 tokens so that base ** length cannot overflow; the cap also bounds the loop.
MAX_MATCH_TOKENS = 50


class DRYPenalty(LogitsProcessor):
    """Penalise the token that would extend a verbatim repeat of an earlier sequence.

    Args:
        multiplier (`float`): > 0; penalty for a repeat exactly `allowed_length` tokens long.
        base (`float`): >= 1; growth of the penalty per extra matched token.
        allowed_length (`int`): >= 1; repeats shorter than this are free.
        breaker_ids (`list[int]`): token ids that end a sequence (newline, ":", quotes...); a match never crosses one.
        last_n (`int`): tokens of context searched; 0 is the whole context.
    """

    def __init__(self, multiplier: float, base: float, allowed_length: int, breaker_ids: list[int], last_n: int):
        if not multiplier > 0:
            raise ValueError(f"dry_multiplier={multiplier!r} must be > 0; drop the processor to disable DRY")
        if base < 1:
            raise ValueError(f"dry_base={base!r} must be >= 1, or longer repeats would be penalised less")
        if allowed_length < 1:
            raise ValueError(f"dry_allowed_length={allowed_length!r} must be >= 1")
        if last_n < 0:
            raise ValueError(f"dry_range={last_n!r} is negative; use 0 for the whole context")
        self.multiplier = multiplier
        self.base = base
        self.allowed_length = allowed_length
        self.breaker_ids = torch.tensor(sorted(set(breaker_ids)), dtype=torch.long)
        self.last_n = last_n

    def match_lengths(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """For each position i < T-1: how many tokens ending at i equal the tokens ending at T-1 (0 if none).

        Position i only counts when the token after it (the one that would be repeated) is not a breaker, and the
        match never extends over a breaker. Returns `(B, T-1)`.
        """
        ids = input_ids  # (B, T)
        length = ids.shape[1]
        breaker = torch.isin(ids, self.breaker_ids.to(ids.device))  # (B, T)
        alive = (ids[:, :-1] == ids[:, -1:]) & ~breaker[:, 1:] & ~breaker[:, -1:]  # (B, T-1)
        lengths = alive.long()
        for k in range(1, min(MAX_MATCH_TOKENS, length - 1)):
            # Candidate i extends when ids[i-k] == ids[T-1-k] (needs i >= k) and ids[T-1-k] is no breaker.
            previous = ids[:, length - 1 - k : length - k]  # (B, 1)
            extends = torch.zeros_like(alive)
            extends[:, k:] = ids[:, : length - 1 - k] == previous
            alive &= extends & ~breaker[:, length - 1 - k : length - k]
            if not alive.any():
                break
            lengths += alive
        return lengths

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = recent_tokens(input_ids, self.last_n)
        if ids.shape[1] < 2:
            return scores
        lengths = self.match_lengths(ids)  # (B, T-1)
        exponent = (lengths - self.allowed_length).to(scores.dtype)
        penalty = self.multiplier * torch.pow(self.base, exponent)  # (B, T-1)
        penalty = torch.where(lengths >= self.allowed_length, penalty, torch.zeros_like(penalty))
        # base >= 1, so the longest match of a next token also gives its largest penalty.
        per_token = torch.zeros_like(scores).scatter_reduce(1, ids[:, 1:], penalty, reduce="amax")  # (B, V)
        return scores - per_token
