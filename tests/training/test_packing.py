"""Packing: bins respect chunk_size, the collator marks boundaries, packed rows train exactly like unpacked ones."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cloneus.config import ModelConfig
from cloneus.models.loading import load_model
from cloneus.training.packing import IGNORE_INDEX, PaddingFreeCollator, pack_lengths, pack_rows


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position predicting the next label; NaN where the next label is ignored."""
    logits, targets = logits[0, :-1].float(), labels[0, 1:]
    loss = torch.nn.functional.cross_entropy(logits, targets.clamp(min=0), reduction="none")
    return loss.masked_fill(targets == IGNORE_INDEX, float("nan"))


class TestPackLengths:
    @given(st.lists(st.integers(1, 64), max_size=60), st.integers(64, 200))
    @settings(max_examples=60, deadline=None)
    def test_every_item_once_and_no_bin_over_capacity(self, lengths, capacity):
        bins = pack_lengths(lengths, capacity)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= capacity for b in bins)

    def test_fills_rows_tightly(self):
        bins = pack_lengths([6, 4, 5, 5, 3, 7], 10)
        assert len(bins) == 3

    def test_too_long_conversation_names_it(self):
        with pytest.raises(ValueError, match="#1 with 12"):
            pack_lengths([3, 12], 10)


class TestPackRowsAndCollator:
    def test_rows_restart_positions_and_mask_first_labels(self):
        rows = pack_rows([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 5]], chunk_size=8)
        assert rows["input_ids"] == [[1, 2, 3, 4, 5]]
        assert rows["position_ids"] == [[0, 1, 2, 0, 1]]
        assert rows["labels"] == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]]
        assert rows["length"] == [5]

    def test_collator_flattens_batch_without_padding(self):
        batch = PaddingFreeCollator()(
            [
                {"input_ids": [5, 6, 7, 8], "labels": [-100, 6, -100, 8], "position_ids": [0, 1, 0, 1]},
                {"input_ids": [9, 4], "labels": [9, 4]},
            ]
        )
        torch.testing.assert_close(batch["input_ids"], torch.tensor([[5, 6, 7, 8, 9, 4]]))
        torch.testing.assert_close(batch["position_ids"], torch.tensor([[0, 1, 0, 1, 0, 1]]))
        torch.testing.assert_close(batch["labels"], torch.tensor([[-100, 6, -100, 8, -100, 4]]))
        assert "attention_mask" not in batch


class TestPackedEqualsUnpacked:
    @pytest.fixture
    def model(self, tiny_model_dir):
        model, _ = load_model(ModelConfig(model_id=str(tiny_model_dir)), device="cpu", for_training=True)
        return model.eval()

    @pytest.fixture
    def conversations(self):
        gen = torch.Generator().manual_seed(0)
        return [torch.randint(3, 300, (n,), generator=gen).tolist() for n in (17, 9, 30, 5)]

    @pytest.mark.parametrize("attn", ["sdpa", "eager"])
    def test_packed_per_token_loss_matches_each_conversation_alone(self, model, conversations, attn):
        model.set_attn_implementation(attn)
        rows = pack_rows(conversations, conversations, chunk_size=64)
        batch = PaddingFreeCollator()([{k: rows[k][r] for k in rows} for r in range(len(rows["input_ids"]))])
        with torch.no_grad():
            packed = per_token_loss(model(**batch).logits, batch["labels"])
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
        assert len(starts) - 1 == len(conversations)
        for start, end in pairwise(starts):
            segment = batch["input_ids"][0, start:end]
            with torch.no_grad():
                alone = per_token_loss(model(input_ids=segment[None]).logits, segment[None])
            # Predictions inside the segment match the conversation run alone; the one across the boundary is ignored.
            torch.testing.assert_close(packed[start : end - 1], alone, atol=1e-4, rtol=0)
            if start > 0:
                assert torch.isnan(packed[start - 1])
        assert sorted(map(len, conversations)) == sorted(b - a for a, b in pairwise(starts))

    def test_without_restarting_positions_the_losses_differ(self, model, conversations):
        """The comparison above is sensitive: attending across conversations changes the loss."""
        model.set_attn_implementation("sdpa")
        ids = torch.tensor([conversations[1] + conversations[0]])
        with torch.no_grad():
            joined = per_token_loss(model(input_ids=ids).logits, ids)
            first = torch.tensor([conversations[0]])
            alone = per_token_loss(model(input_ids=first).logits, first)
        n = len(conversations[1])
        assert not torch.allclose(joined[n : n + len(conversations[0]) - 1], alone, atol=1e-4)
