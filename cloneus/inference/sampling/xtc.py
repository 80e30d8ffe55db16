"""XTC, "Exclude Top Choices" (p-e-w), as in text-generation-webui.

With probability `probability` per row and step, every token at least `threshold` likely is removed except the
least likely of them, which pushes the model off its most predictable continuation. Nothing happens when fewer
than two tokens reach the threshold, or when the removal would hit a newline or end-of-turn token (removing those
makes replies run on). The roll uses the call's seeded `StepRandom`, never Python's global `random`.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from cloneus.inference.sampling.draw import XTC_STREAM, StepRandom


class XTC(LogitsProcessor):
    """Exclude the top choices but the least likely one.

    Args:
        threshold (`float`): in [0, 0.5]; tokens at least this likely are top choices.
        probability (`float`): in [0, 1]; chance that XTC acts on a row at a step.
        protected_ids (`list[int]`): newline and end-of-turn ids; if any would be removed the row is left alone.
        seed (`int`): >= 0, the call's seed.
        prompt_length (`int`): length of `input_ids` when generation starts.
    """

    def __init__(self, threshold: float, probability: float, protected_ids: list[int], seed: int, prompt_length: int):
        if not 0 <= threshold <= 0.5:
            raise ValueError(f"xtc_threshold={threshold!r} must be in [0, 0.5]; above 0.5 two tokens cannot reach it")
        if not 0 <= probability <= 1:
            raise ValueError(f"xtc_probability={probability!r} must be in [0, 1]")
        self.threshold = threshold
        self.probability = probability
        self.protected_ids = torch.tensor(sorted(set(protected_ids)), dtype=torch.long)
        self.random = StepRandom(seed, prompt_length, XTC_STREAM)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        acts = (self.random.uniform(input_ids) < self.probability).to(scores.device)  # (B,)
        if not acts.any():
            return scores
        probs = scores.float().softmax(-1)
        top = probs >= self.threshold  # (B, V)
        least_top = torch.where(top, probs, torch.full_like(probs, 2.0)).amin(-1, keepdim=True)
        remove = top & (probs > least_top)
        protected = self.protected_ids.to(scores.device)
        if protected.numel():
            acts &= ~remove[:, protected].any(-1)
        return scores.masked_fill(remove & acts[:, None], float("-inf"))
