"""Next-speaker tallies, on a scripted scorer whose answers are known."""

from __future__ import annotations

import pytest

from cloneus.evaluation.heldout import Moment
from cloneus.evaluation.intervals import wilson_interval
from cloneus.evaluation.speaker import most_frequent_guess, next_speaker


class ScriptedClone:
    """Stands in for `Cloneus`: author_probabilities always favours `order`, best first (no model needed)."""

    def __init__(self, order: list[str]):
        self.order = order
        self.histories: list[list[tuple[str, str]]] = []

    def author_probabilities(self, history):
        self.histories.append(list(history))
        n = len(self.order)
        return {name: (n - i) / n for i, name in enumerate(self.order)}


CONVERSATIONS = [[("a", "hi"), ("b", "yo"), ("c", "hey"), ("b", "sup"), ("d", "ok")]]
TURNS = [Moment(0, 1, "b"), Moment(0, 2, "c"), Moment(0, 3, "b"), Moment(0, 4, "d")]
MEMBERS = ["b", "c", "a", "d"]


class TestNextSpeaker:
    def test_top1_and_top3_per_true_author(self):
        clone = ScriptedClone(["c", "b", "a", "d"])
        result = next_speaker(clone, CONVERSATIONS, TURNS, MEMBERS)
        assert clone.histories[0] == CONVERSATIONS[0][:1] and clone.histories[3] == CONVERSATIONS[0][:4]
        assert result["top1"] == pytest.approx(1 / 4) and result["top3"] == pytest.approx(3 / 4)
        assert result["turns"] == 4 and result["top1_ci95"] == pytest.approx(wilson_interval(1, 4))
        assert result["members"]["b"] == {"top1": 0.0, "top3": 1.0, "turns": 2}
        assert result["members"]["c"] == {"top1": 1.0, "top3": 1.0, "turns": 1}
        assert result["members"]["d"] == {"top1": 0.0, "top3": 0.0, "turns": 1}
        assert result["members"]["a"] == {"top1": None, "top3": None, "turns": 0}

    def test_most_frequent_guess_always_names_the_members_in_order(self):
        result = most_frequent_guess(TURNS, MEMBERS)
        assert result["author"] == "b"
        assert result["top1"] == pytest.approx(2 / 4) and result["top3"] == pytest.approx(3 / 4)
