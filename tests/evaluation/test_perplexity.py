"""Per-member held-out loss against the model's own loss on hand-made labels."""

from __future__ import annotations

import math

import pytest
import torch

from cloneus.evaluation.perplexity import perplexity_by_member, token_losses

CONVERSATION = [("alice", "pizza on friday?"), ("bob", "count me in"), ("zed", "who am I"), ("alice", "great")]


@pytest.fixture(scope="module")
def clone(checkpoint):
    from cloneus import Cloneus

    loaded = Cloneus.from_pretrained(checkpoint, device="cpu")
    yield loaded
    loaded.unload()


def manual_loss(clone, conversation, authors: set[str]) -> tuple[float, int]:
    """HF's own mean cross-entropy with labels on the tokens that start inside `authors`' messages."""
    text, pos, spans = clone.formatter.prefix, len(clone.formatter.prefix), []
    for i, (author, message) in enumerate(conversation):
        opening, closing = clone.formatter.wrap(i, author)
        seg = opening + message + closing
        spans.append((author, pos, pos + len(seg)))
        text += seg
        pos += len(seg)
    enc = clone.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [
        tok if any(a in authors and s <= start < e for a, s, e in spans) else -100
        for tok, (start, _) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    labels[0] = -100  # nothing predicts the first token
    model = clone.backend.model
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), use_cache=False).loss
    return loss.item(), sum(label != -100 for label in labels)


class TestPerplexity:
    def test_member_loss_is_the_models_loss_on_that_members_tokens(self, clone):
        result = perplexity_by_member(clone.backend.model, clone.formatter, [CONVERSATION], ["alice", "bob"])
        for member in ("alice", "bob"):
            loss, tokens = manual_loss(clone, CONVERSATION, {member})
            assert result["members"][member]["tokens"] == tokens
            assert result["members"][member]["loss"] == pytest.approx(loss, abs=1e-4)
            assert result["members"][member]["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)

    def test_overall_pools_the_labelled_tokens_and_skips_unknown_authors(self, clone):
        result = perplexity_by_member(clone.backend.model, clone.formatter, [CONVERSATION], ["alice", "bob"])
        loss, tokens = manual_loss(clone, CONVERSATION, {"alice", "bob"})
        assert result["tokens"] == tokens
        assert result["loss"] == pytest.approx(loss, abs=1e-4)
        assert "zed" not in {a for a, _ in token_losses(clone.backend.model, clone.formatter, CONVERSATION)}

    def test_a_member_without_held_out_tokens_has_no_figure(self, clone):
        result = perplexity_by_member(clone.backend.model, clone.formatter, [CONVERSATION], ["alice", "carol"])
        assert result["members"]["carol"] == {"loss": None, "perplexity": None, "tokens": 0}
