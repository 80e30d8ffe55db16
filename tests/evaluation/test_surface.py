"""Surface statistics on strings whose answers are known by hand."""

from __future__ import annotations

import pytest

from cloneus.evaluation.surface import distinct_2, normalise, surface_stats


class TestSurfaceStats:
    def test_lengths_and_rates_match_a_hand_count(self):
        texts = ["hello there", "WHAT IS THIS", "see https://x.org ok?", "nice :smile:", "ok 👍 I guess"]
        stats = surface_stats(texts)
        lengths = [2, 3, 3, 2, 4]
        assert stats["n"] == 5
        assert stats["words_mean"] == pytest.approx(sum(lengths) / 5)
        assert stats["words_median"] == 3
        assert stats["words_p90"] == pytest.approx(3.6)  # sorted 2,2,3,3,4: 3 + 0.6 * (4 - 3)
        assert stats["emoji_rate"] == pytest.approx(2 / 5)  # the shortcode and the thumbs-up
        assert stats["link_rate"] == pytest.approx(1 / 5)
        assert stats["question_rate"] == pytest.approx(1 / 5)
        assert stats["caps_rate"] == pytest.approx(1 / 5)
        assert stats["lowercase_rate"] == pytest.approx(3 / 5)  # "ok 👍 I guess" has a capital I
        assert stats["copy_context_rate"] is None and stats["copy_train_rate"] is None

    def test_short_capitals_are_not_shouting(self):
        assert surface_stats(["OK", "I"])["caps_rate"] == 0

    def test_distinct_2_counts_repeated_bigrams_once_and_never_across_messages(self):
        assert distinct_2(["a b a b", "b a"]) == pytest.approx(2 / 4)  # (a,b) (b,a) (a,b) | (b,a)
        assert distinct_2(["one", "two"]) is None

    def test_copies_are_matched_ignoring_case_and_spacing(self):
        texts = ["Same  As Before", "new words", "from training"]
        contexts = [["earlier", "same as before"], ["nothing like it"], []]
        stats = surface_stats(texts, contexts, {normalise("FROM training")})
        assert stats["copy_context_rate"] == pytest.approx(1 / 3)
        assert stats["copy_train_rate"] == pytest.approx(1 / 3)

    def test_empty_input_has_no_figures(self):
        stats = surface_stats([])
        assert stats["n"] == 0 and stats["words_mean"] is None and stats["distinct_2"] is None

    def test_contexts_must_line_up_with_texts(self):
        with pytest.raises(ValueError, match="2 contexts for 1 texts"):
            surface_stats(["a"], [[], []])
