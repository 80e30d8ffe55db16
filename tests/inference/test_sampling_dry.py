"""DRY: a hand-worked example, and agreement with a direct transcription of webui's per-match loop."""

from __future__ import annotations

import random

import pytest
import torch
from torch.testing import assert_close

from cloneus.inference.sampling.dry import MAX_MATCH_TOKENS, DRYPenalty


def reference_dry(ids: list[int], scores: list[float], multiplier, base, allowed, breakers, last_n) -> list[float]:
    """webui's DRYLogitsProcessor algorithm, one row, plain Python: the slow oracle the tensor version must match."""
    ids = ids[-last_n:] if last_n > 0 else ids
    out = list(scores)
    last = ids[-1]
    if last in breakers:
        return out
    best: dict[int, int] = {}
    for i in range(len(ids) - 1):
        if ids[i] != last or ids[i + 1] in breakers:
            continue
        length = 1
        while length < MAX_MATCH_TOKENS:
            j = i - length
            if j < 0 or ids[j] != ids[-(length + 1)] or ids[-(length + 1)] in breakers:
                break
            length += 1
        best[ids[i + 1]] = max(length, best.get(ids[i + 1], 0))
    for token, length in best.items():
        if length >= allowed:
            out[token] -= multiplier * base ** (length - allowed)
    return out


class TestDRYPenalty:
    def test_penalises_the_token_that_continued_the_earlier_match(self):
        # "1 2 3 4 9 1 2 3": the suffix "1 2 3" (length 3) was followed by 4 before.
        ids = torch.tensor([[1, 2, 3, 4, 9, 1, 2, 3]])
        out = DRYPenalty(0.8, 1.75, 2, breaker_ids=[], last_n=0)(ids, torch.zeros(1, 10))
        expected = torch.zeros(1, 10)
        expected[0, 4] = -0.8 * 1.75 ** (3 - 2)
        assert_close(out, expected)

    def test_match_shorter_than_allowed_length_is_free(self):
        ids = torch.tensor([[1, 2, 3, 4, 9, 1, 2, 3]])
        out = DRYPenalty(0.8, 1.75, 4, breaker_ids=[], last_n=0)(ids, torch.zeros(1, 10))
        assert_close(out, torch.zeros(1, 10))

    def test_breaker_inside_the_match_stops_it(self):
        ids = torch.tensor([[1, 2, 3, 4, 9, 1, 2, 3]])
        out = DRYPenalty(0.8, 1.75, 2, breaker_ids=[2], last_n=0)(ids, torch.zeros(1, 10))
        assert_close(out, torch.zeros(1, 10))

    def test_breaker_as_next_token_is_never_penalised(self):
        ids = torch.tensor([[1, 2, 3, 4, 9, 1, 2, 3]])
        out = DRYPenalty(0.8, 1.75, 2, breaker_ids=[4], last_n=0)(ids, torch.zeros(1, 10))
        assert_close(out, torch.zeros(1, 10))

    def test_range_hides_older_matches(self):
        ids = torch.tensor([[1, 2, 3, 4, 9, 1, 2, 3]])
        out = DRYPenalty(0.8, 1.75, 2, breaker_ids=[], last_n=4)(ids, torch.zeros(1, 10))
        assert_close(out, torch.zeros(1, 10))

    def test_removed_tokens_stay_removed(self):
        ids = torch.tensor([[1, 2, 3, 4, 9, 1, 2, 3]])
        scores = torch.zeros(1, 10)
        scores[0, 4] = float("-inf")
        assert DRYPenalty(0.8, 1.75, 2, breaker_ids=[], last_n=0)(ids, scores)[0, 4] == float("-inf")

    @pytest.mark.parametrize(
        ("kwargs", "message"), [({"multiplier": 0}, "dry_multiplier"), ({"base": 0.5}, "dry_base")]
    )
    def test_invalid_arguments_are_refused(self, kwargs, message):
        args = {"multiplier": 0.8, "base": 1.75, "allowed_length": 2, "breaker_ids": [], "last_n": 0} | kwargs
        with pytest.raises(ValueError, match=message):
            DRYPenalty(**args)

    def test_matches_reference_on_random_repetitive_batches(self):
        rng = random.Random(7)
        vocab = 24
        for _ in range(30):
            length = rng.randint(2, 90)
            block = [rng.randrange(vocab) for _ in range(rng.randint(2, 12))]
            rows = []
            for _ in range(3):
                row: list[int] = []
                while len(row) < length:
                    row += block[: rng.randint(1, len(block))] + [rng.randrange(vocab)]
                rows.append(row[:length])
            params = {
                "multiplier": rng.choice([0.8, 2.0]),
                "base": rng.choice([1.0, 1.75]),
                "allowed": rng.choice([1, 2, 3]),
                "breakers": set(rng.sample(range(vocab), rng.choice([0, 2]))),
                "last_n": rng.choice([0, 16, 40]),
            }
            scores = torch.randn(3, vocab)
            processor = DRYPenalty(
                params["multiplier"], params["base"], params["allowed"], list(params["breakers"]), params["last_n"]
            )
            out = processor(torch.tensor(rows), scores)
            expected = [reference_dry(r, s.tolist(), **params) for r, s in zip(rows, scores, strict=True)]
            assert_close(out, torch.tensor(expected))

    def test_long_verbatim_repeat_is_capped_at_max_match(self):
        block = list(range(1, 80))
        ids = block + [0] + block[:70]
        out = DRYPenalty(1.0, 1.01, 2, breaker_ids=[], last_n=0)(torch.tensor([ids]), torch.zeros(1, 100))
        assert_close(out[0, 71], torch.tensor(-(1.01 ** (MAX_MATCH_TOKENS - 2))))
