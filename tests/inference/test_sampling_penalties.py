"""Repetition, presence and frequency penalties on hand-built logits."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from cloneus.inference.sampling.penalties import FrequencyPenalty, PresencePenalty, RepetitionPenalty

SCORES = torch.tensor([[2.0, -2.0, 1.0, 3.0]])
IDS = torch.tensor([[0, 1, 1]])


class TestRepetitionPenalty:
    def test_divides_positive_and_multiplies_negative_seen_logits(self):
        out = RepetitionPenalty(2.0, last_n=0)(IDS, SCORES)
        assert_close(out, torch.tensor([[1.0, -4.0, 1.0, 3.0]]))

    def test_range_limits_the_window(self):
        out = RepetitionPenalty(2.0, last_n=1)(IDS, SCORES)
        assert_close(out, torch.tensor([[2.0, -4.0, 1.0, 3.0]]))

    def test_input_is_not_modified(self):
        scores = SCORES.clone()
        RepetitionPenalty(2.0, last_n=0)(IDS, scores)
        assert_close(scores, SCORES)

    def test_rows_use_their_own_tokens(self):
        scores = SCORES.repeat(2, 1)
        out = RepetitionPenalty(2.0, last_n=0)(torch.tensor([[0, 0], [3, 3]]), scores)
        assert_close(out, torch.tensor([[1.0, -2.0, 1.0, 3.0], [2.0, -2.0, 1.0, 1.5]]))

    @pytest.mark.parametrize("penalty", [0.0, -1.0])
    def test_non_positive_penalty_is_refused(self, penalty):
        with pytest.raises(ValueError, match="repetition_penalty=.* must be > 0"):
            RepetitionPenalty(penalty, last_n=0)


class TestPresencePenalty:
    def test_subtracts_once_per_seen_token(self):
        out = PresencePenalty(0.5, last_n=0)(IDS, SCORES)
        assert_close(out, torch.tensor([[1.5, -2.5, 1.0, 3.0]]))

    def test_negative_range_is_refused(self):
        with pytest.raises(ValueError, match="range=-1 is negative"):
            PresencePenalty(0.5, last_n=-1)


class TestFrequencyPenalty:
    def test_subtracts_per_occurrence(self):
        out = FrequencyPenalty(0.5, last_n=0)(IDS, SCORES)
        assert_close(out, torch.tensor([[1.5, -3.0, 1.0, 3.0]]))

    def test_range_counts_only_recent_occurrences(self):
        out = FrequencyPenalty(0.5, last_n=1)(IDS, SCORES)
        assert_close(out, torch.tensor([[2.0, -2.5, 1.0, 3.0]]))
