"""Mirostat v2 (Basu et al.), which both truncates and draws, as in text-generation-webui and llama.cpp.

Each step keeps the tokens whose surprise `-log2 p` is at most `mu` (always the top token), draws one from the
renormalised probabilities, and moves `mu` by `eta * (tau - observed surprise)`. Because `mu` follows the tokens
actually drawn, Mirostat has to be the drawer: it is always the last processor, wherever `mirostat` sits in
`sampler_priority`.

State: one `mu` per batch row, held by this instance. `build_logits_processor` builds a fresh list for every
generate call, so the state lives exactly as long as one call; it is also reset whenever a call starts
(`input_ids` length equals `prompt_length`), so rows never share or inherit a `mu`.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from cloneus.inference.sampling.draw import DRAW_STREAM, StepRandom, draw_tokens, only_token


class MirostatV2(LogitsProcessor):
    """Mirostat v2 truncation plus the draw; returns -inf everywhere except the drawn token.

    Args:
        tau (`float`): >= 0, target surprise in bits; `mu` starts at `2 * tau`.
        eta (`float`): >= 0, learning rate of `mu`.
        seed (`int`): >= 0, the call's seed.
        prompt_length (`int`): length of `input_ids` when generation starts.
    """

    def __init__(self, tau: float, eta: float, seed: int, prompt_length: int):
        if tau < 0 or eta < 0:
            raise ValueError(f"mirostat_tau={tau!r} and mirostat_eta={eta!r} must both be >= 0")
        self.tau = tau
        self.eta = eta
        self.random = StepRandom(seed, prompt_length, DRAW_STREAM)
        self.mu: torch.FloatTensor | None = None  # (B, 1), set on the first step

    @property
    def seed(self) -> int:
        return self.random.seed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        uniform = self.random.uniform(input_ids)  # also validates the step
        if self.mu is None or input_ids.shape[1] == self.random.prompt_length:
            self.mu = torch.full((scores.shape[0], 1), 2 * self.tau, dtype=torch.float32, device=scores.device)
        probs = scores.float().softmax(-1)  # (B, V)
        # Surprise -log2 p <= mu, compared as p >= 2**-mu: log2 of the many zero probabilities is slow on CPU.
        keep = probs >= torch.exp2(-self.mu)
        keep.scatter_(1, probs.argmax(-1, keepdim=True), True)
        kept = torch.where(keep, probs, torch.zeros_like(probs))
        kept = kept / kept.sum(-1, keepdim=True)
        chosen = draw_tokens(kept, uniform)  # (B, 1)
        surprise = -torch.log2(kept.gather(1, chosen))
        self.mu = self.mu - self.eta * (surprise - self.tau)
        return only_token(scores, chosen)
