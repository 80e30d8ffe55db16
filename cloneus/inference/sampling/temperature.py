"""Samplers that reshape the distribution without removing tokens: temperature, dynamic temperature, quadratic.

All work per batch row (webui's dynamic temperature and quadratic sampling take the entropy and the max over the
whole batch; one row must not change another row's temperature). Removed tokens (-inf) stay removed.
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor


def row_entropy(scores: torch.FloatTensor) -> torch.FloatTensor:
    """Entropy in nats of softmax(scores) per row, `(B, 1)`; removed (-inf) tokens contribute 0."""
    scores = scores.float()
    # Clamping log 0 = -inf to a finite floor makes 0 * log 0 come out as 0 instead of nan. softmax rather than
    # exp(log_softmax): exp and log of -inf / 0 take a slow path that costs 20-40x a normal element on CPU.
    return -(scores.softmax(-1) * scores.log_softmax(-1).clamp_min(-1e30)).sum(-1, keepdim=True)


class Temperature(LogitsProcessor):
    """Divide the logits by `temperature`.

    Args:
        temperature (`float`): > 0; below 1 sharpens, above 1 flattens.
    """

    def __init__(self, temperature: float):
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be > 0; for greedy decoding set do_sample=False")
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperature


class DynamicTemperature(LogitsProcessor):
    """Temperature chosen per step from the normalised entropy H / log(n_valid) (webui's DynaTemp).

    `T = low + (high - low) * (H / H_max) ** exponent`: a confident (peaked) step samples near `low`, an unsure
    (flat) one near `high`.

    Args:
        low (`float`): > 0, temperature at zero entropy.
        high (`float`): >= low, temperature at maximum entropy.
        exponent (`float`): > 0, shape of the mapping.
    """

    def __init__(self, low: float, high: float, exponent: float):
        if not 0 < low <= high:
            raise ValueError(f"dynatemp_low={low!r}, dynatemp_high={high!r}: need 0 < low <= high")
        if not exponent > 0:
            raise ValueError(f"dynatemp_exponent={exponent!r} must be > 0")
        self.low = low
        self.high = high
        self.exponent = exponent

    def temperatures(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """The temperature of each row, `(B, 1)`."""
        entropy = row_entropy(scores).clamp_min(1e-10)
        valid = (~torch.isneginf(scores)).sum(-1, keepdim=True).float()
        max_entropy = torch.log(valid)
        max_entropy = torch.where(max_entropy > 0, max_entropy, torch.full_like(max_entropy, 1e-10))
        return self.low + (self.high - self.low) * (entropy / max_entropy).pow(self.exponent)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperatures(scores).to(scores.dtype)


class QuadraticSmoothing(LogitsProcessor):
    """Quadratic ("smooth") sampling: `max - k*f*d**2 + s*f*d**3` with `d = logit - max`.

    `k = (3 - curve) / 2` and `s = (curve - 1) / 2`, as in webui. A large `factor` sharpens; a small one flattens
    the top of the distribution while still cutting the tail.

    Args:
        factor (`float`): > 0, smoothing factor.
        curve (`float`): >= 1, 1 is a pure quadratic; higher bends the tail down faster.
    """

    def __init__(self, factor: float, curve: float):
        if not factor > 0:
            raise ValueError(f"smoothing_factor={factor!r} must be > 0; drop the processor to disable it")
        if not (curve >= 1 and math.isfinite(curve)):
            raise ValueError(f"smoothing_curve={curve!r} must be a finite number >= 1")
        self.factor = factor
        self.k = (3 - curve) / 2
        self.s = (curve - 1) / 2

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = scores.amax(-1, keepdim=True)  # (B, 1)
        diff = scores - top
        # max - k*f*d**2 + s*f*d**3, factored; -inf logits give nan or -inf here and are restored to -inf.
        smoothed = top + self.factor * diff * diff * (self.s * diff - self.k)
        return torch.nan_to_num(smoothed, nan=float("-inf"), neginf=float("-inf"))
