"""The author classifier on hand-built styles: clearly distinct writers are told apart, mixed ones are not."""

from __future__ import annotations

import pytest

from cloneus.evaluation.intervals import wilson_interval
from cloneus.evaluation.style import StyleClassifier

SHOUTER = ["OMG YES!!!", "LOL NO WAY!!!", "WOW SO COOL!!!", "HAHA GREAT!!!", "YES YES YES!!!", "NOPE!!! LOL"]
ASKER = ["did you check the logs?", "which version is it?", "is it plugged in?", "what does it print?"]
ASKER += ["have you tried a reboot?", "can you paste the error?"]


@pytest.fixture(scope="module")
def classifier():
    texts = SHOUTER * 3 + ASKER * 3 + ["from a third person"] * 5
    authors = ["shouter"] * 18 + ["asker"] * 18 + ["lurker"] * 5
    return StyleClassifier(texts, authors, members=["shouter", "asker"])


class TestStyleClassifier:
    def test_only_members_are_classes(self, classifier):
        assert classifier.members == ["asker", "shouter"]
        assert classifier.train_messages == 36

    def test_distinct_styles_are_attributed_to_their_author(self, classifier):
        result = classifier.attribution(["WHAT!!! LOL", "is the disk full?"], ["shouter", "asker"])
        assert result["accuracy"] == 1.0 and result["n"] == 2
        assert result["chance"] == 0.5

    def test_text_in_the_other_style_counts_as_a_miss(self, classifier):
        result = classifier.attribution(["OMG NO!!!", "what does dmesg say?", "YES!!! WOW"], ["asker"] * 3)
        assert result["members"]["asker"] == {"accuracy": pytest.approx(1 / 3), "n": 3}
        assert result["members"]["shouter"] == {"accuracy": None, "n": 0}
        assert result["accuracy"] == pytest.approx(1 / 3)
        assert result["ci95"] == pytest.approx(wilson_interval(1, 3))
        assert classifier.correct(["OMG NO!!!", "what does dmesg say?"], ["asker", "asker"]) == [False, True]

    def test_texts_of_non_members_are_not_scored(self, classifier):
        assert classifier.attribution(["hello"], ["lurker"])["n"] == 0

    def test_one_member_is_not_enough(self):
        with pytest.raises(ValueError, match="two members"):
            StyleClassifier(["a b c", "d e f"], ["x", "x"], ["x"])
