"""The seed README's zero-shot usage on the real builtin model (SmolLM2-135M-Instruct): slow, one test.

It uses the shared model cache (`data/models/` or `$CLONEUS_MODEL_CACHE`), so the GGUF is converted at most once.
"""

from __future__ import annotations

import pytest

CHAT = [("JohnnyFish", "blub blub"), ("Balbo23", "yeah, I was gonna say fundamentally the same thing")]


@pytest.mark.slow
def test_zero_shot_builtin_streams_clean_replies():
    from cloneus import Cloneus

    clo = Cloneus.from_model_id("builtin:smollm2-135m", author_names=["JohnnyFish", "Balbo23", "sstaaph"])
    prompt = clo.formatter.generation_prompt(CHAT, "JohnnyFish")
    assert "SmolLM" not in prompt  # the template's default system prompt is not injected
    assert prompt.endswith("<|im_start|>JohnnyFish\n")

    streamed = "".join(clo.stream_generate(CHAT, "JohnnyFish", do_sample=False, max_new_tokens=24))
    assert streamed == clo.generate(CHAT, "JohnnyFish", do_sample=False, max_new_tokens=24)
    assert streamed and "<|im_" not in streamed

    probs = clo.author_probabilities(CHAT)
    assert set(probs) == {"JohnnyFish", "Balbo23", "sstaaph"}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert clo.predict_author(CHAT, "top") == max(probs, key=probs.get)
