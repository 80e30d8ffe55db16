"""Mirostat v2: surprise truncation, the mu update from the drawn token, per-row state and its reset."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from cloneus.inference.sampling.mirostat import MirostatV2

# Surprises in bits: [1, 2, 3, 3].
PROBS = [0.5, 0.25, 0.125, 0.125]
SCORES = torch.tensor([[math.log(p) for p in PROBS]])


def drawn(out: torch.Tensor) -> list[int]:
    return torch.isfinite(out).float().argmax(-1).tolist()


class TestMirostatV2:
    def test_truncates_above_mu_and_updates_mu_from_the_renormalised_draw(self):
        rows = 400
        mirostat = MirostatV2(tau=1.0, eta=0.5, seed=3, prompt_length=2)  # mu starts at 2 bits: keeps {0, 1}
        out = mirostat(torch.zeros(rows, 2, dtype=torch.long), SCORES.repeat(rows, 1))
        tokens = drawn(out)
        assert set(tokens) == {0, 1}
        assert (torch.isfinite(out).sum(-1) == 1).all()
        # Renormalised over {0, 1}: p = 2/3 and 1/3; mu -= eta * (surprise - tau).
        surprise = torch.tensor([-math.log2(2 / 3) if t == 0 else -math.log2(1 / 3) for t in tokens])
        assert_close(mirostat.mu.flatten(), 2.0 - 0.5 * (surprise - 1.0))

    def test_always_keeps_the_top_token(self):
        mirostat = MirostatV2(tau=0.0, eta=0.1, seed=1, prompt_length=1)  # mu = 0 bits: nothing within it
        assert drawn(mirostat(torch.zeros(32, 1, dtype=torch.long), SCORES.repeat(32, 1))) == [0] * 32

    def test_rows_keep_separate_mu(self):
        mirostat = MirostatV2(tau=1.0, eta=0.5, seed=3, prompt_length=2)
        mirostat(torch.zeros(64, 2, dtype=torch.long), SCORES.repeat(64, 1))
        assert mirostat.mu.unique().numel() == 2

    def test_mu_resets_when_a_new_call_starts(self):
        mirostat = MirostatV2(tau=1.0, eta=0.5, seed=3, prompt_length=2)
        first = mirostat(torch.zeros(8, 2, dtype=torch.long), SCORES.repeat(8, 1))
        mirostat(torch.zeros(8, 3, dtype=torch.long), SCORES.repeat(8, 1))
        again = mirostat(torch.zeros(8, 2, dtype=torch.long), SCORES.repeat(8, 1))
        assert torch.equal(first, again)

    def test_negative_tau_is_refused(self):
        with pytest.raises(ValueError, match="mirostat_tau=-1"):
            MirostatV2(tau=-1.0, eta=0.1, seed=0, prompt_length=0)
