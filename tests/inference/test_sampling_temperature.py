"""Temperature, dynamic temperature and quadratic smoothing on hand-built logits."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from cloneus.inference.sampling.temperature import DynamicTemperature, QuadraticSmoothing, Temperature

NO_IDS = torch.zeros(1, 1, dtype=torch.long)
NEG_INF = float("-inf")


class TestTemperature:
    def test_divides_logits(self):
        assert_close(Temperature(2.0)(NO_IDS, torch.tensor([[2.0, -4.0]])), torch.tensor([[1.0, -2.0]]))

    def test_zero_points_to_greedy(self):
        with pytest.raises(ValueError, match="do_sample=False"):
            Temperature(0.0)


class TestDynamicTemperature:
    def test_temperature_follows_normalised_entropy_per_row(self):
        probs = [0.7, 0.2, 0.1]
        entropy = -sum(p * math.log(p) for p in probs)
        expected_peaked = 0.5 + (1.5 - 0.5) * (entropy / math.log(3)) ** 2.0
        scores = torch.tensor([[math.log(p) for p in probs], [0.0, 0.0, 0.0]])
        temperatures = DynamicTemperature(0.5, 1.5, 2.0).temperatures(scores)
        assert_close(temperatures, torch.tensor([[expected_peaked], [1.5]]))

    def test_removed_tokens_do_not_count_towards_max_entropy(self):
        # Two equally likely valid tokens: entropy ln 2 = max entropy over 2 valid tokens -> high temperature.
        scores = torch.tensor([[0.0, 0.0, NEG_INF, NEG_INF]])
        out = DynamicTemperature(0.5, 2.0, 1.0)(NO_IDS, scores)
        assert_close(out, torch.tensor([[0.0, 0.0, NEG_INF, NEG_INF]]))
        assert_close(DynamicTemperature(0.5, 2.0, 1.0).temperatures(scores), torch.tensor([[2.0]]))

    def test_low_above_high_is_refused(self):
        with pytest.raises(ValueError, match="low <= high"):
            DynamicTemperature(2.0, 1.0, 1.0)


class TestQuadraticSmoothing:
    @pytest.mark.parametrize(
        ("curve", "expected"),
        [
            # k = 1, s = 0: max - f * d**2 with d = [0, -1, -2], f = 0.5
            (1.0, [2.0, 1.5, 0.0, NEG_INF]),
            # k = 0.5, s = 0.5: max - 0.25 d**2 + 0.25 d**3
            (2.0, [2.0, 1.5, -1.0, NEG_INF]),
        ],
    )
    def test_formula(self, curve, expected):
        out = QuadraticSmoothing(0.5, curve)(NO_IDS, torch.tensor([[2.0, 1.0, 0.0, NEG_INF]]))
        assert_close(out, torch.tensor([expected]))

    def test_each_row_uses_its_own_max(self):
        out = QuadraticSmoothing(1.0, 1.0)(NO_IDS, torch.tensor([[1.0, 0.0], [10.0, 9.0]]))
        assert_close(out, torch.tensor([[1.0, 0.0], [10.0, 9.0]]))

    def test_curve_below_one_is_refused(self):
        with pytest.raises(ValueError, match="smoothing_curve=0.5"):
            QuadraticSmoothing(1.0, 0.5)
