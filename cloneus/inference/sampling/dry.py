"""DRY ("Don't Repeat Yourself", p-e-w) as a vectorised logits processor.

webui's reference walks every earlier occurrence of the last token in Python and extends each match backwards,
which is O(occurrences x match length) Python per step, up to 1,500 x 50 on a repetitive history. Here one
tensor comparison finds the candidates (earlier occurrences of the last token), an `unfold` view lines up the 50
tokens ending at each candidate with the 50 ending the history, and a cumulative product counts how far each
match reaches: a fixed dozen tensor ops per step, whatever the history. Only penalised tokens are touched.

Semantics match webui's `DRYLogitsProcessor`: the same match lengths (capped at 50), the same breakers rule, and
a penalty of `multiplier * base ** (length - allowed_length)` on the token that followed the longest match.
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

    def matches(self, ids: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor, torch.LongTensor]:
        """Every earlier position i whose tokens match the end of its row: `(rows, positions, lengths)`, `(M,)`.

        The match length counts tokens ending at i that equal the tokens ending at T-1, never extending over a
        breaker. Position i only counts when the token after it (the one that would be repeated) is not a breaker.
        """
        length = ids.shape[1]
        breaker = torch.isin(ids, self.breaker_ids.to(ids.device))  # (B, T)
        starts = (ids[:, :-1] == ids[:, -1:]) & ~breaker[:, 1:] & ~breaker[:, -1:]  # (B, T-1)
        rows, positions = starts.nonzero(as_tuple=True)  # (M,) each
        # Line up the K tokens ending at each candidate with the K tokens ending at T-1 (the last column is the
        # candidate itself). Left padding with -1, which equals no token, ends matches at the start of the window.
        window = min(MAX_MATCH_TOKENS, length - 1)
        padded = torch.nn.functional.pad(ids, (window - 1, 0), value=-1)
        ending_at = padded.unfold(1, window, 1)  # (B, T, K) view: ending_at[:, i] = ids[i-K+1 .. i]
        extends = ending_at[rows, positions] == ending_at[rows, length - 1]  # (M, K)
        extends &= ~breaker[rows, length - window :]  # a match never extends over a breaker at the end
        # Match length = number of trues counted back from the candidate until the first false.
        return rows, positions, extends.flip(-1).long().cumprod(-1).sum(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = recent_tokens(input_ids, self.last_n)
        if ids.shape[1] < 2:
            return scores
        rows, positions, lengths = self.matches(ids)
        hit = lengths >= self.allowed_length
        if not bool(hit.any()):
            return scores
        rows, lengths = rows[hit], lengths[hit]
        tokens = ids[rows, positions[hit] + 1]
        penalty = self.multiplier * torch.pow(self.base, (lengths - self.allowed_length).to(scores.dtype))
        # Several matches can precede the same token; the longest counts (base >= 1, so the largest penalty).
        keys, slot = torch.unique(rows * scores.shape[-1] + tokens, return_inverse=True)
        worst = torch.zeros(keys.shape, dtype=scores.dtype, device=scores.device)
        worst = worst.scatter_reduce(0, slot, penalty, reduce="amax")
        out = scores.clone()
        out[keys // scores.shape[-1], keys % scores.shape[-1]] -= worst
        return out
