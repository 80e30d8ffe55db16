"""Base-model chat: the adapter switched off for the call, the tokenizer's chat template, refusals, and the
clone's prefix cache left untouched."""

from __future__ import annotations

import pytest
import torch

from cloneus.errors import CloneusError
from cloneus.inference.base_chat import base_prompt

GREEDY = {"do_sample": False, "max_new_tokens": 8}
CHAT = [("user", "what is a segfault?")]


def greedy_ids(clo, prompt: str, adapter: bool) -> list[int]:
    """The reference: a plain greedy `generate` on the backend's model, adapter on or off, no cache."""
    model, tok = clo.backend.model, clo.tokenizer
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        if adapter:
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)
        else:
            with model.disable_adapter():
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8
                )
    return out[0, ids.shape[1] :].tolist()


class TestBasePrompt:
    def test_is_the_chat_template_with_the_system_message(self, clo):
        prompt = base_prompt(clo.tokenizer, [("user", "hi"), ("assistant", "hello"), ("user", "why")], "be brief")
        expected = clo.tokenizer.apply_chat_template(
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "why"},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert prompt == expected and "alice" not in prompt

    @pytest.mark.parametrize(
        ("messages", "match"),
        [
            ([], "user's message last"),
            ([("user", "a"), ("assistant", "b")], "last"),
            ([("bot", "x"), ("user", "y")], "'bot'"),
        ],
    )
    def test_malformed_chats_are_refused(self, clo, messages, match):
        with pytest.raises(CloneusError, match=match):
            base_prompt(clo.tokenizer, messages)


class TestBaseStream:
    def test_answers_with_the_adapter_off(self, clo):
        prompt = base_prompt(clo.tokenizer, CHAT)
        base, tuned = greedy_ids(clo, prompt, adapter=False), greedy_ids(clo, prompt, adapter=True)
        assert base != tuned  # the random adapter changes the outputs, so the check below can fail
        text = "".join(clo.base_stream(CHAT, **GREEDY))
        expected = clo.tokenizer.decode(base, skip_special_tokens=False)
        special = min((expected.find(t) for t in clo.tokenizer.all_special_tokens if t in expected), default=None)
        expected = expected[:special] if special is not None else expected
        assert text == expected.strip() and text

    def test_the_adapter_is_back_on_and_the_prefix_cache_untouched_afterwards(self, clo):
        history = [("alice", "hello"), ("bob", "hi there")]
        before = clo.generate(history, "carol", **GREEDY)
        cached = list(clo.backend.prefix.ids)
        "".join(clo.base_stream(CHAT, **GREEDY))
        assert clo.backend.prefix.ids == cached
        assert clo.generate(history, "carol", **GREEDY) == before
