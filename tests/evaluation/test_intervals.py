"""Wilson intervals and the exact McNemar test against values worked out by hand (and textbook tables)."""

from __future__ import annotations

import pytest

from cloneus.evaluation.intervals import mcnemar_exact, paired_comparison, wilson_interval


class TestWilsonInterval:
    def test_known_value(self):
        # 10 of 40 (the bench's attribution): p=0.25, z=1.96 -> [0.1419, 0.4019].
        low, high = wilson_interval(10, 40)
        assert low == pytest.approx(0.1419, abs=1e-4) and high == pytest.approx(0.4019, abs=1e-4)

    def test_it_stays_inside_zero_and_one(self):
        low, high = wilson_interval(0, 5)
        assert low == 0.0 and 0.4 < high < 0.5
        low, high = wilson_interval(5, 5)
        assert 0.5 < low < 0.6 and high == 1.0

    def test_it_narrows_with_more_items_at_the_same_rate(self):
        small, large = wilson_interval(10, 40), wilson_interval(100, 400)
        assert small[0] < large[0] < 0.25 < large[1] < small[1]

    def test_no_items_is_no_interval(self):
        assert wilson_interval(0, 0) is None


class TestMcNemar:
    def test_known_values(self):
        assert mcnemar_exact(0, 0) == 1.0
        assert mcnemar_exact(5, 5) == 1.0
        assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)
        # 9 against 2: 2 * P(X <= 2), X ~ Binomial(11, 1/2).
        assert mcnemar_exact(9, 2) == pytest.approx(2 * (1 + 11 + 55) / 2**11)
        assert mcnemar_exact(2, 9) == mcnemar_exact(9, 2)

    def test_paired_counts_only_the_items_the_two_disagree_on(self):
        first = [True, True, True, False, False, True]
        second = [True, False, False, False, True, True]
        result = paired_comparison("finetuned", first, "base", second)
        assert result == {"finetuned_only": 2, "base_only": 1, "p_value": pytest.approx(1.0)}

    def test_different_items_are_refused(self):
        with pytest.raises(ValueError, match="same items: 2 against 1"):
            paired_comparison("a", [True, False], "b", [True])
