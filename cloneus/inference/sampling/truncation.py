"""Truncation samplers: each sets the logits of the tokens it rejects to -inf and keeps at least the top token.

Formulas follow text-generation-webui (which uses transformers' warpers for top-k/top-p/typical/epsilon/eta) and
llama.cpp for top-n-sigma (population standard deviation over the finite logits).

Speed: a full sort of a 49k vocabulary costs milliseconds on a CPU, several times the cost of every other step.
Only top-p, typical-p and TFS need an order; they sort just the finite candidates (`sorted_candidates`), so once
an earlier sampler (top-k, min-p...) has cut the vocabulary to a few dozen tokens their sort is nearly free.
Top-p also stops early: the nucleus of a language model is almost always inside its 256 most likely tokens, which
`topk` finds without sorting the rest. The other samplers are single passes over the vocabulary.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from cloneus.inference.sampling.temperature import row_entropy

NEG_INF = float("-inf")
# Top-p first looks at this many of the most likely tokens; only when they hold less than `p` does it sort all.
TOP_P_PROBE_TOKENS = 256


def kept_count(scores: torch.FloatTensor) -> int:
    """The largest number of tokens not yet removed (-inf) in any row."""
    return int((~torch.isneginf(scores)).sum(-1).max())


def sorted_candidates(scores: torch.FloatTensor, extra: int = 0) -> tuple[torch.FloatTensor, torch.LongTensor]:
    """The finite logits of each row in descending order, plus `extra` -inf slots: `(values, ids)`, `(B, n)`.

    `n` is the largest finite count over the rows (plus `extra`, at most V); rows with fewer finite logits are
    padded with -inf, exactly as a full sort would place them.
    """
    return torch.topk(scores, min(kept_count(scores) + extra, scores.shape[-1]), dim=-1)


def drop_sorted(
    scores: torch.FloatTensor, values: torch.FloatTensor, ids: torch.LongTensor, remove: torch.BoolTensor
) -> torch.FloatTensor:
    """`scores` with the candidates flagged in `remove` (same layout as `values`/`ids`) set to -inf."""
    return scores.scatter(-1, ids, values.masked_fill(remove, NEG_INF))


def _check_unit(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r} must be in [0, 1]")


class TopNSigma(LogitsProcessor):
    """Keep tokens whose logit is within `n` standard deviations of the max logit (llama.cpp `top_n_sigma`).

    Args:
        n (`float`): > 0; smaller keeps fewer tokens. The statistics use the finite logits only.
    """

    def __init__(self, n: float):
        if not n > 0:
            raise ValueError(f"top_n_sigma={n!r} must be > 0; use 0 in SamplingOptions to disable it")
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        kept = (~torch.isneginf(scores)).to(scores.dtype)  # (B, V)
        count = kept.sum(-1, keepdim=True).clamp_min(1)
        zeroed = torch.nan_to_num(scores, neginf=0.0)
        mean = zeroed.sum(-1, keepdim=True) / count
        variance = ((zeroed - mean) ** 2 * kept).sum(-1, keepdim=True) / count
        cutoff = scores.amax(-1, keepdim=True) - self.n * variance.sqrt()  # (B, 1)
        return scores.masked_fill(scores < cutoff, NEG_INF)


class TopK(LogitsProcessor):
    """Keep the `k` highest logits (ties with the k-th are kept, as in transformers).

    Args:
        k (`int`): >= 1.
    """

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"top_k={k!r} must be >= 1; use 0 in SamplingOptions to disable it")
        self.k = k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        kth = torch.topk(scores, min(self.k, scores.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        return scores.masked_fill(scores < kth, NEG_INF)


class TopP(LogitsProcessor):
    """Nucleus sampling: keep the most likely tokens until their probability reaches `p`.

    A token is kept when the mass of the tokens ranked above it is below `p`, which is transformers'
    rule ("remove where the ascending cumulative mass <= 1 - p") read from the top.

    Args:
        p (`float`): in [0, 1]; 0 keeps only the top token.
    """

    def __init__(self, p: float):
        _check_unit("top_p", p)
        self.p = p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.float().softmax(-1)
        kept = kept_count(scores)
        top_probs, ids = torch.topk(probs, min(kept, TOP_P_PROBE_TOKENS), dim=-1)  # (B, n), descending
        if kept > TOP_P_PROBE_TOKENS and not bool((top_probs.sum(-1) >= self.p).all()):
            top_probs, ids = torch.topk(probs, kept, dim=-1)
        mass_above = top_probs.cumsum(-1) - top_probs
        remove = mass_above >= self.p
        remove[:, 0] = False
        # Tokens outside the candidates are removed already or have the candidates' mass (>= p) above them.
        kept_values = scores.gather(-1, ids).masked_fill(remove, NEG_INF)
        return torch.full_like(scores, NEG_INF).scatter(-1, ids, kept_values)


class TypicalP(LogitsProcessor):
    """Locally typical sampling (Meister et al.): keep the tokens whose surprise is closest to the entropy,
    until their mass reaches `mass` (transformers' `TypicalLogitsWarper` rule).

    Args:
        mass (`float`): in [0, 1].
    """

    def __init__(self, mass: float):
        _check_unit("typical_p", mass)
        self.mass = mass

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        values, ids = sorted_candidates(scores)
        log_probs = values.float().log_softmax(-1)
        entropy = row_entropy(values)
        distance = (-log_probs - entropy).abs()  # (B, n); inf for -inf slots
        distance, order = torch.sort(distance, dim=-1)
        cumulative = values.float().softmax(-1).gather(-1, order).cumsum(-1)
        last = (cumulative < self.mass).sum(-1, keepdim=True).clamp(max=distance.shape[-1] - 1)
        remove_in_order = distance > distance.gather(-1, last)
        remove_in_order[:, 0] = False
        remove = remove_in_order.scatter(-1, order, remove_in_order)
        return drop_sorted(scores, values, ids, remove)


class EpsilonCutoff(LogitsProcessor):
    """Drop tokens whose probability is below `epsilon` (Hewitt et al.); the top token always stays.

    Args:
        epsilon (`float`): a probability in [0, 1] (SamplingOptions gives it in 1e-4 units).
    """

    def __init__(self, epsilon: float):
        _check_unit("epsilon", epsilon)
        self.epsilon = epsilon

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.float().softmax(-1)
        remove = (probs < self.epsilon) & (scores < scores.amax(-1, keepdim=True))
        return scores.masked_fill(remove, NEG_INF)


class EtaCutoff(LogitsProcessor):
    """Eta sampling (Hewitt et al.): drop tokens below `min(eta, sqrt(eta) * exp(-entropy))`.

    Args:
        eta (`float`): a probability in [0, 1] (SamplingOptions gives it in 1e-4 units).
    """

    def __init__(self, eta: float):
        _check_unit("eta", eta)
        self.eta = eta

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.float().softmax(-1)
        cutoff = torch.clamp(self.eta**0.5 * torch.exp(-row_entropy(scores)), max=self.eta)
        remove = (probs < cutoff) & (scores < scores.amax(-1, keepdim=True))
        return scores.masked_fill(remove, NEG_INF)


class TailFree(LogitsProcessor):
    """Tail free sampling (Trenton Bricken): cut where the second derivative of the sorted probabilities has
    accumulated `z` of its total, as webui does (the least likely token of the vocabulary is always dropped).

    Args:
        z (`float`): in [0, 1].
    """

    def __init__(self, z: float):
        _check_unit("tfs", z)
        self.z = z

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Two -inf slots past the finite candidates reproduce the full-vocabulary second differences exactly.
        values, ids = sorted_candidates(scores, extra=2)
        if values.shape[-1] < 3:
            return scores
        probs = values.float().softmax(-1)
        curvature = probs.diff().diff().abs()  # (B, n-2)
        cdf = (curvature / curvature.sum(-1, keepdim=True)).cumsum(-1)
        first = torch.zeros_like(cdf[:, :1], dtype=torch.bool)
        remove = torch.cat([first, cdf > self.z, ~first], dim=-1)  # (B, n)
        return drop_sorted(scores, values, ids, remove)


class TopA(LogitsProcessor):
    """Drop tokens whose probability is below `a * max_prob ** 2`.

    Args:
        a (`float`): in [0, 1].
    """

    def __init__(self, a: float):
        _check_unit("top_a", a)
        self.a = a

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.float().softmax(-1)
        top = probs.amax(-1, keepdim=True)
        return scores.masked_fill(probs < self.a * top * top, NEG_INF)


class MinP(LogitsProcessor):
    """Drop tokens whose probability is below `min_p * max_prob`.

    Args:
        min_p (`float`): in [0, 1].
    """

    def __init__(self, min_p: float):
        _check_unit("min_p", min_p)
        self.min_p = min_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.float().softmax(-1)
        return scores.masked_fill(probs < self.min_p * probs.amax(-1, keepdim=True), NEG_INF)
