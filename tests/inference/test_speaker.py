"""Next-speaker prediction: mode parsing, the choice rules, and probabilities checked against a brute force."""

from __future__ import annotations

import math
import random

import pytest
import torch

from cloneus.inference.speaker import choose_author, normalise, parse_mode
from tests.inference.conftest import AUTHORS, HISTORY


class TestParseMode:
    @pytest.mark.parametrize(
        ("mode", "threshold", "expected"),
        [
            ("weighted", None, ("weighted", None)),
            ("TOP", None, ("top", None)),
            ("uniform", None, ("uniform", None)),
            ("inverse", None, ("inverse", None)),
            ("lurk", 0.4, ("lurk", 0.4)),
            (("lurk", 0.5), None, ("lurk", 0.5)),
            ("lurk(0.25)", None, ("lurk", 0.25)),
        ],
    )
    def test_accepted_spellings(self, mode, threshold, expected):
        assert parse_mode(mode, threshold) == expected

    @pytest.mark.parametrize("mode", ["lurk", "lurk(2)", "loud", ("lurk",)])
    def test_bad_modes_say_what_is_expected(self, mode):
        with pytest.raises(ValueError, match="lurk|expected"):
            parse_mode(mode)


class TestChooseAuthor:
    PROBS = {"a": 0.6, "b": 0.3, "c": 0.1}

    def test_top_and_lurk(self):
        rng = random.Random(0)
        assert choose_author(self.PROBS, "top", None, rng) == "a"
        assert choose_author(self.PROBS, "lurk", 0.5, rng) == "a"
        assert choose_author(self.PROBS, "lurk", 0.7, rng) is None

    def test_weighted_follows_the_probabilities(self):
        rng = random.Random(0)
        draws = [choose_author(self.PROBS, "weighted", None, rng) for _ in range(3000)]
        assert abs(draws.count("a") / 3000 - 0.6) < 0.05
        assert abs(draws.count("c") / 3000 - 0.1) < 0.03

    def test_inverse_favours_the_quiet_members(self):
        rng = random.Random(0)
        draws = [choose_author(self.PROBS, "inverse", None, rng) for _ in range(3000)]
        # weights 0.4, 0.7, 0.9 out of 2.0
        assert abs(draws.count("a") / 3000 - 0.2) < 0.04 and abs(draws.count("c") / 3000 - 0.45) < 0.05
        assert choose_author({"solo": 1.0}, "inverse", None, rng) == "solo"

    def test_normalise_is_a_softmax(self):
        probs = normalise({"a": math.log(2), "b": math.log(6)})
        assert probs == pytest.approx({"a": 0.25, "b": 0.75})


def brute_force_logprob(clo, prefix: str, continuation: str) -> float:
    """log p(continuation | prefix) from one plain forward pass over the whole text, no cache."""
    model, tok = clo.backend.model, clo.tokenizer
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    full = tok(prefix + continuation, add_special_tokens=False)["input_ids"]
    assert full[: len(p)] == p
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0]  # (T, V)
    logprobs = torch.log_softmax(logits.float(), -1)
    return sum(logprobs[i - 1, full[i]].item() for i in range(len(p), len(full)))


class TestAuthorProbabilities:
    def test_matches_brute_force_and_sums_to_one(self, clo):
        probs = clo.author_probabilities(HISTORY)
        assert list(probs) == AUTHORS
        prefix, continuations = clo.formatter.speaker_prompt(HISTORY)
        expected = normalise({a: brute_force_logprob(clo, prefix, continuations[a]) for a in AUTHORS})
        torch.testing.assert_close(list(probs.values()), list(expected.values()), atol=1e-5, rtol=1e-4)
        assert sum(probs.values()) == pytest.approx(1.0)

    def test_predict_author_modes(self, clo):
        probs = clo.author_probabilities(HISTORY)
        best = max(probs, key=probs.get)
        assert clo.predict_author(HISTORY, "top") == best
        assert clo.predict_author(HISTORY, ("lurk", probs[best] - 1e-6)) == best
        assert clo.predict_author(HISTORY, "lurk", threshold=min(1.0, probs[best] + 1e-3)) is None
        assert clo.predict_author(HISTORY, "uniform", seed=1) in AUTHORS
        assert clo.predict_author(HISTORY, "weighted", seed=3) in AUTHORS

    def test_excluded_author_is_never_picked(self, clo):
        probs = clo.author_probabilities(HISTORY)
        best = max(probs, key=probs.get)
        assert clo.predict_author(HISTORY, "top", exclude=[best]) != best
        picks = {clo.predict_author(HISTORY, "uniform", exclude=["alice"], seed=s) for s in range(30)}
        assert picks == {"bob", "carol"}
