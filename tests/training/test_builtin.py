"""A few real LoRA steps on the builtin SmolLM2, served straight from the checkpoint."""

from __future__ import annotations

import pytest

from cloneus.training.trainer import train

from .conftest import tiny_config


@pytest.mark.slow
def test_builtin_model_trains_and_its_checkpoint_generates(chat_csv, tmp_path):
    from cloneus import Cloneus

    cfg = tiny_config("builtin:smollm2-135m", tmp_path, max_steps=2, save_steps=2, chunk_size=256)
    result = train(cfg, chatlog=chat_csv, run_name="b")
    assert result.run_dir.parent.name == "smollm2-135m"
    assert result.metrics["train_loss"] < 10
    clone = Cloneus.from_pretrained(result.checkpoint, device="cpu")
    reply = clone.generate([("alice", "pizza on friday?")], "bob", max_new_tokens=12, seed=0)
    assert isinstance(reply, str) and reply.strip()
