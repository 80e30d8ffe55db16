"""Truncation samplers: kept sets worked out by hand, and agreement with transformers' warpers (the code webui
runs for top-k/top-p/typical/epsilon/eta/min-p) on random logits, with and without already-removed tokens."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from cloneus.inference.sampling.truncation import (
    EpsilonCutoff,
    EtaCutoff,
    MinP,
    TailFree,
    TopA,
    TopK,
    TopNSigma,
    TopP,
    TypicalP,
    sorted_candidates,
)

NO_IDS = torch.zeros(1, 1, dtype=torch.long)


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([[math.log(p) if p > 0 else -math.inf for p in probs]])


def kept(scores: torch.Tensor) -> set[int]:
    return set(torch.isfinite(scores[0]).nonzero().flatten().tolist())


def random_logits(seed: int, rows: int = 4, vocab: int = 300, removed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, vocab, generator=generator) * 3
    if removed:
        order = torch.rand(rows, vocab, generator=generator).argsort(-1)[:, :removed]
        scores = scores.scatter(1, order, float("-inf"))
    return scores


def same_kept(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert torch.equal(torch.isfinite(ours), torch.isfinite(reference))
    finite = torch.isfinite(ours)
    assert torch.equal(ours[finite], reference[finite])


class TestSortedCandidates:
    def test_returns_finite_logits_in_descending_order(self):
        values, ids = sorted_candidates(torch.tensor([[0.0, float("-inf"), 2.0, 1.0]]))
        assert ids.tolist() == [[2, 3, 0]]
        assert values.tolist() == [[2.0, 1.0, 0.0]]


class TestTopK:
    def test_keeps_the_k_highest(self):
        assert kept(TopK(2)(NO_IDS, torch.tensor([[1.0, 5.0, 3.0, 4.0]]))) == {1, 3}

    @pytest.mark.parametrize("removed", [0, 250])
    def test_matches_transformers(self, removed):
        scores = random_logits(1, removed=removed)
        same_kept(TopK(20)(NO_IDS, scores), TopKLogitsWarper(20)(NO_IDS, scores.clone()))

    def test_zero_is_refused(self):
        with pytest.raises(ValueError, match="top_k=0 must be >= 1"):
            TopK(0)


class TestTopP:
    @pytest.mark.parametrize(("p", "expected"), [(0.7, {0, 1}), (0.5, {0}), (0.9, {0, 1, 2}), (0.0, {0})])
    def test_keeps_smallest_set_reaching_p(self, p, expected):
        # probs [0.5, 0.3, 0.2]: the mass above each token is [0, 0.5, 0.8]; kept while below p.
        assert kept(TopP(p)(NO_IDS, logits_of([0.5, 0.3, 0.2]))) == expected

    def test_result_is_mapped_back_to_vocabulary_positions(self):
        assert kept(TopP(0.7)(NO_IDS, logits_of([0.2, 0.5, 0.3]))) == {1, 2}

    @pytest.mark.parametrize("removed", [0, 250])
    @pytest.mark.parametrize("p", [0.3, 0.9])
    def test_matches_transformers(self, removed, p):
        scores = random_logits(2, removed=removed)
        same_kept(TopP(p)(NO_IDS, scores), TopPLogitsWarper(p)(NO_IDS, scores.clone()))

    def test_out_of_range_is_refused(self):
        with pytest.raises(ValueError, match=r"top_p=1.5 must be in \[0, 1\]"):
            TopP(1.5)


class TestTypicalP:
    @pytest.mark.parametrize("removed", [0, 250])
    @pytest.mark.parametrize("mass", [0.2, 0.9])
    def test_matches_transformers(self, removed, mass):
        scores = random_logits(3, removed=removed)
        same_kept(TypicalP(mass)(NO_IDS, scores), TypicalLogitsWarper(mass)(NO_IDS, scores.clone()))

    def test_keeps_tokens_closest_to_the_entropy(self):
        # probs [0.4, 0.3, 0.3]: entropy 1.0889 nats; surprises 0.916, 1.204, 1.204 -> distances 0.173, 0.115,
        # 0.115. Sorted by distance: tokens 1, 2 (mass 0.6) then 0; mass 0.5 stops after token 2 -> keep {1, 2}.
        assert kept(TypicalP(0.5)(NO_IDS, logits_of([0.4, 0.3, 0.3]))) == {1, 2}


class TestEpsilonAndEta:
    @pytest.mark.parametrize(("epsilon", "expected"), [(0.1, {0, 1, 2}), (0.6, {0})])
    def test_epsilon_drops_below_probability_but_keeps_top(self, epsilon, expected):
        assert kept(EpsilonCutoff(epsilon)(NO_IDS, logits_of([0.5, 0.3, 0.15, 0.05]))) == expected

    def test_eta_cutoff_is_entropy_scaled(self):
        probs = [0.5, 0.3, 0.15, 0.05]
        entropy = -sum(p * math.log(p) for p in probs)
        cutoff = min(0.2, math.sqrt(0.2) * math.exp(-entropy))
        expected = {i for i, p in enumerate(probs) if p >= cutoff}
        assert kept(EtaCutoff(0.2)(NO_IDS, logits_of(probs))) == expected == {0, 1, 2}

    @pytest.mark.parametrize("removed", [0, 250])
    def test_match_transformers(self, removed):
        scores = random_logits(4, removed=removed)
        same_kept(EpsilonCutoff(3e-3)(NO_IDS, scores), EpsilonLogitsWarper(3e-3)(NO_IDS, scores.clone()))
        same_kept(EtaCutoff(3e-3)(NO_IDS, scores), EtaLogitsWarper(3e-3)(NO_IDS, scores.clone()))


class TestMinPAndTopA:
    @pytest.mark.parametrize(("min_p", "expected"), [(0.2, {0, 1, 2}), (0.7, {0}), (0.0, {0, 1, 2, 3})])
    def test_min_p_scales_with_top_probability(self, min_p, expected):
        assert kept(MinP(min_p)(NO_IDS, logits_of([0.5, 0.3, 0.15, 0.05]))) == expected

    @pytest.mark.parametrize("removed", [0, 250])
    def test_min_p_matches_transformers(self, removed):
        scores = random_logits(5, removed=removed)
        same_kept(MinP(0.1)(NO_IDS, scores), MinPLogitsWarper(0.1)(NO_IDS, scores.clone()))

    @pytest.mark.parametrize(("a", "expected"), [(0.5, {0, 1, 2}), (1.0, {0, 1})])
    def test_top_a_uses_square_of_top_probability(self, a, expected):
        # threshold a * 0.5**2: 0.125 keeps 0.15; 0.25 does not.
        assert kept(TopA(a)(NO_IDS, logits_of([0.5, 0.3, 0.15, 0.05]))) == expected


class TestTopNSigma:
    @pytest.mark.parametrize(("n", "expected"), [(1.0, {0, 1}), (2.0, {0, 1, 2})])
    def test_uses_population_std_of_finite_logits(self, n, expected):
        # finite logits [4, 2, 0, -2]: mean 1, variance 20/4 = 5, std 2.236; cutoff 4 - n * std.
        scores = torch.tensor([[4.0, 2.0, 0.0, -2.0, float("-inf")]])
        assert kept(TopNSigma(n)(NO_IDS, scores)) == expected

    def test_rows_are_independent(self):
        scores = torch.tensor([[4.0, 2.0, 0.0, -2.0], [0.0, 0.0, 0.0, -10.0]])
        out = TopNSigma(1.0)(NO_IDS, scores)
        assert torch.isfinite(out).tolist() == [[True, True, False, False], [True, True, True, False]]


def reference_tail_free(scores: torch.Tensor, z: float) -> torch.Tensor:
    """webui's TailFreeLogitsWarper over the full vocabulary (the oracle for the compacted version)."""
    sorted_logits, sorted_ids = torch.sort(scores, descending=True)
    probs = sorted_logits.softmax(-1)
    curvature = probs.diff().diff().abs()
    cdf = (curvature / curvature.sum(-1, keepdim=True)).cumsum(-1)
    ones = torch.ones(scores.shape[0], 1, dtype=torch.bool)
    remove = torch.cat([~ones, cdf > z, ones], dim=-1)
    return scores.masked_fill(remove.scatter(1, sorted_ids, remove), float("-inf"))


class TestTailFree:
    @pytest.mark.parametrize(("z", "expected"), [(0.6, {0, 1}), (0.4, {0})])
    def test_hand_worked_second_derivative(self, z, expected):
        # probs [0.5, 0.3, 0.15, 0.05]: |second differences| [0.05, 0.05] -> cdf [0.5, 1.0];
        # token 1 is kept when 0.5 <= z, token 2 needs 1.0 <= z, the last token always goes.
        assert kept(TailFree(z)(NO_IDS, logits_of([0.5, 0.3, 0.15, 0.05]))) == expected

    @pytest.mark.parametrize("removed", [0, 150, 290])
    def test_matches_full_vocabulary_reference(self, removed):
        scores = random_logits(6, removed=removed)
        same_kept(TailFree(0.9)(NO_IDS, scores), reference_tail_free(scores, 0.9))
