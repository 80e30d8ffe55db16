"""The final draw: pick one token per row and leave it as the only finite logit, so greedy `generate` takes it.

Reproducibility without global seeds: the randomness of step t is drawn from a `torch.Generator` re-seeded with
`mix(seed, t, stream)`, where t counts generated tokens (`input_ids` length minus `prompt_length`). The draw is
therefore a pure function of (seed, step, scores): the same seed gives the same tokens on every run, whether the
caller streams or not, and two consumers of randomness (XTC's roll and the draw) never share a stream.

Drawing is inverse-CDF sampling on the probabilities in vocabulary order (one cumulative sum and a binary
search), which avoids sorting the vocabulary and costs a tenth of `torch.multinomial` on a 49k vocabulary.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

MASK_64 = (1 << 64) - 1
# Independent random streams per step, one per consumer.
DRAW_STREAM = 0
XTC_STREAM = 1


def mix_seed(seed: int, step: int, stream: int) -> int:
    """A well-spread 63-bit seed from (seed, step, stream): splitmix64's finaliser over a combined key."""
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & MASK_64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK_64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK_64
    return (z ^ (z >> 31)) >> 1


class StepRandom:
    """Uniform numbers for one generate call, keyed by the step so they do not depend on call history.

    Args:
        seed (`int`): >= 0, the call's seed.
        prompt_length (`int`): length of `input_ids` when generation starts; step 0 is the first new token.
        stream (`int`): which consumer draws (`DRAW_STREAM`, `XTC_STREAM`).
    """

    def __init__(self, seed: int, prompt_length: int, stream: int):
        if seed < 0:
            raise ValueError(f"seed={seed!r} must be >= 0; build_logits_processor replaces -1 by a random seed")
        if prompt_length < 0:
            raise ValueError(f"prompt_length={prompt_length!r} must be >= 0")
        self.seed = seed
        self.prompt_length = prompt_length
        self.stream = stream
        self.generator = torch.Generator()

    def step(self, input_ids: torch.LongTensor) -> int:
        step = input_ids.shape[1] - self.prompt_length
        if step < 0:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens, fewer than prompt_length={self.prompt_length}; "
                "build the processor list for each generate call with that call's prompt length"
            )
        return step

    def uniform(self, input_ids: torch.LongTensor) -> torch.DoubleTensor:
        """One number in [0, 1) per batch row, `(B,)` float64 on the CPU."""
        self.generator.manual_seed(mix_seed(self.seed, self.step(input_ids), self.stream))
        return torch.rand(input_ids.shape[0], generator=self.generator, dtype=torch.float64)


def draw_tokens(probs: torch.FloatTensor, uniform: torch.DoubleTensor) -> torch.LongTensor:
    """Inverse-CDF sampling: the id whose cumulative-probability interval contains `uniform * total`, `(B, 1)`.

    Zero-probability ids have empty intervals and are never returned; a row without any mass returns its last id.
    """
    cdf = probs.cumsum(-1)  # (B, V)
    target = uniform.to(device=probs.device, dtype=cdf.dtype)[:, None] * cdf[:, -1:]
    chosen = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)  # (B, 1)
    if bool((probs.gather(1, chosen) > 0).all()):
        return chosen
    # Rounding put a target on (or past) the total, or a row has no mass: take the last id with mass instead.
    last_with_mass = probs.shape[-1] - 1 - (probs.flip(-1) > 0).long().argmax(-1, keepdim=True)
    has_mass = probs.gather(1, chosen) > 0
    return torch.where(has_mass, chosen, last_with_mass)


def only_token(scores: torch.FloatTensor, chosen: torch.LongTensor) -> torch.FloatTensor:
    """-inf everywhere except `chosen` (`(B, 1)`), which keeps its logit."""
    return torch.full_like(scores, float("-inf")).scatter(1, chosen, scores.gather(1, chosen))


class TokenDraw(LogitsProcessor):
    """Sample from softmax(scores) and return scores that are -inf except the drawn token.

    Must be the last processor; `generate(do_sample=False)` then picks the drawn token.

    Args:
        seed (`int`): >= 0, the call's seed (see the module docstring for how steps are keyed).
        prompt_length (`int`): length of `input_ids` when generation starts.
    """

    def __init__(self, seed: int, prompt_length: int):
        self.random = StepRandom(seed, prompt_length, DRAW_STREAM)

    @property
    def seed(self) -> int:
        return self.random.seed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.float().softmax(-1)
        chosen = draw_tokens(probs, self.random.uniform(input_ids))
        return only_token(scores, chosen)
