"""The final draw: one finite token per row, frequencies that follow the probabilities, seeded by step."""

from __future__ import annotations

import math

import pytest
import torch

from cloneus.inference.sampling.draw import StepRandom, TokenDraw, draw_tokens, mix_seed

PROBS = [0.5, 0.3, 0.2, 0.0]
SCORES = torch.tensor([[math.log(p) if p else -math.inf for p in PROBS]])


class TestDrawTokens:
    def test_zero_probability_is_never_drawn(self):
        probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]])
        uniforms = torch.tensor([0.0, 0.4999, 0.5, 0.999999999])
        chosen = [int(draw_tokens(probs, u[None])) for u in uniforms]
        assert chosen == [1, 1, 3, 3]

    def test_top_of_the_range_lands_on_last_token_with_mass(self):
        assert int(draw_tokens(torch.tensor([[0.3, 0.7, 0.0]]), torch.tensor([1.0]))) == 1


class TestTokenDraw:
    def test_returns_minus_inf_except_the_drawn_token(self):
        out = TokenDraw(seed=3, prompt_length=2)(torch.zeros(1, 2, dtype=torch.long), SCORES)
        finite = torch.isfinite(out[0]).nonzero().flatten().tolist()
        assert len(finite) == 1
        assert out[0, finite[0]] == SCORES[0, finite[0]]

    def test_frequencies_follow_probabilities(self):
        rows = 6000
        out = TokenDraw(seed=5, prompt_length=1)(torch.zeros(rows, 1, dtype=torch.long), SCORES.repeat(rows, 1))
        counts = torch.isfinite(out).sum(0).double() / rows
        # 4 standard errors of a proportion with n = 6000 is at most 0.026.
        assert torch.allclose(counts, torch.tensor(PROBS, dtype=torch.float64), atol=0.026)
        assert counts[3] == 0

    def test_same_seed_and_step_give_the_same_token_whatever_was_drawn_before(self):
        scores = torch.randn(8, 50)
        ids = torch.zeros(8, 7, dtype=torch.long)
        fresh = TokenDraw(seed=9, prompt_length=4)
        used = TokenDraw(seed=9, prompt_length=4)
        used(torch.zeros(8, 5, dtype=torch.long), scores)
        assert torch.equal(fresh(ids, scores), used(ids, scores))

    def test_different_steps_and_seeds_draw_differently(self):
        scores = torch.zeros(64, 50)
        draw = TokenDraw(seed=9, prompt_length=0)
        step1 = draw(torch.zeros(64, 1, dtype=torch.long), scores)
        step2 = draw(torch.zeros(64, 2, dtype=torch.long), scores)
        other_seed = TokenDraw(seed=10, prompt_length=0)(torch.zeros(64, 1, dtype=torch.long), scores)
        assert not torch.equal(step1, step2)
        assert not torch.equal(step1, other_seed)

    def test_input_shorter_than_prompt_is_refused(self):
        with pytest.raises(ValueError, match="build the processor list for each generate call"):
            TokenDraw(seed=1, prompt_length=10)(torch.zeros(1, 3, dtype=torch.long), SCORES)


class TestStepRandom:
    def test_streams_are_independent(self):
        ids = torch.zeros(16, 3, dtype=torch.long)
        assert not torch.equal(StepRandom(1, 0, 0).uniform(ids), StepRandom(1, 0, 1).uniform(ids))

    def test_mixed_seed_fits_in_63_bits(self):
        assert all(0 <= mix_seed(2**63 - 1, step, 5) < 2**63 for step in range(100))

    def test_negative_seed_is_refused(self):
        with pytest.raises(ValueError, match="seed=-1 must be >= 0"):
            StepRandom(-1, 0, 0)
