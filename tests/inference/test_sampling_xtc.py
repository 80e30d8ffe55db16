"""XTC: which top choices go, the newline/EOS guard, and the seeded per-row roll."""

from __future__ import annotations

import math

import pytest
import torch

from cloneus.inference.sampling.xtc import XTC

PROBS = [0.4, 0.3, 0.2, 0.1]
SCORES = torch.tensor([[math.log(p) for p in PROBS]])
IDS = torch.zeros(1, 5, dtype=torch.long)  # prompt of 5 tokens, step 0


def kept_rows(scores: torch.Tensor) -> list[set[int]]:
    return [set(row.nonzero().flatten().tolist()) for row in torch.isfinite(scores)]


class TestXTC:
    def test_removes_all_top_choices_but_the_least_likely(self):
        # threshold 0.15: top choices {0, 1, 2}; the least likely of them (2) stays.
        out = XTC(0.15, 1.0, protected_ids=[], seed=0, prompt_length=5)(IDS, SCORES)
        assert kept_rows(out) == [{2, 3}]

    def test_single_top_choice_is_left_alone(self):
        out = XTC(0.35, 1.0, protected_ids=[], seed=0, prompt_length=5)(IDS, SCORES)
        assert kept_rows(out) == [{0, 1, 2, 3}]

    @pytest.mark.parametrize("protected", [0, 1])
    def test_never_removes_newline_or_eos(self, protected):
        out = XTC(0.15, 1.0, protected_ids=[protected], seed=0, prompt_length=5)(IDS, SCORES)
        assert kept_rows(out) == [{0, 1, 2, 3}]

    def test_protected_token_that_survives_does_not_block(self):
        out = XTC(0.15, 1.0, protected_ids=[3], seed=0, prompt_length=5)(IDS, SCORES)
        assert kept_rows(out) == [{2, 3}]

    def test_probability_zero_never_acts(self):
        out = XTC(0.15, 0.0, protected_ids=[], seed=0, prompt_length=5)(IDS, SCORES)
        assert kept_rows(out) == [{0, 1, 2, 3}]

    def test_roll_is_per_row_and_reproducible(self):
        scores = SCORES.repeat(64, 1)
        ids = torch.zeros(64, 5, dtype=torch.long)
        first = torch.isfinite(XTC(0.15, 0.5, protected_ids=[], seed=11, prompt_length=5)(ids, scores))
        again = torch.isfinite(XTC(0.15, 0.5, protected_ids=[], seed=11, prompt_length=5)(ids, scores))
        other = torch.isfinite(XTC(0.15, 0.5, protected_ids=[], seed=12, prompt_length=5)(ids, scores))
        acted = ~first[:, 0]
        assert 0 < int(acted.sum()) < 64
        assert torch.equal(first, again)
        assert not torch.equal(first, other)

    def test_threshold_above_half_is_refused(self):
        with pytest.raises(ValueError, match="xtc_threshold=0.6"):
            XTC(0.6, 1.0, protected_ids=[], seed=0, prompt_length=0)
