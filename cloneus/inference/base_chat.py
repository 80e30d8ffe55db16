"""Talking to the untuned base model: the checkpoint's weights with the LoRA adapter switched off, prompted in the
tokenizer's own chat template (the old server's `ask`/`chat`).

This is a plain assistant chat, never a group chat: no author tags, no user index, and it stops at the
tokenizer's special tokens rather than at the next author's tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloneus.errors import CloneusError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from cloneus.inference.stopping import TextStops

ROLES = ("user", "assistant")


def base_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[tuple[str, str]], system: str | None = None
) -> str:
    """The chat-template text for `messages` (`(role, text)`, oldest first, ending with the user's turn), ready
    for the assistant's reply.

    Raises:
        `CloneusError`: no chat template on the tokenizer, a role other than user/assistant, or no user turn last.
    """
    if not tokenizer.chat_template:
        raise CloneusError("this model's tokenizer has no chat template, so the base model cannot be chatted with")
    if not messages or messages[-1][0] != "user":
        raise CloneusError("base-model chat needs the user's message last")
    bad = [role for role, _ in messages if role not in ROLES]
    if bad:
        raise CloneusError(f"base-model chat roles must be user or assistant, got {bad[0]!r}")
    turns = [{"role": "system", "content": system}] if system else []
    turns += [{"role": role, "content": text} for role, text in messages]
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def base_stops(tokenizer: PreTrainedTokenizerBase) -> TextStops:
    """Stop at any special token (end of turn, end of text)."""
    from cloneus.inference.stopping import TextStops

    specials = list(tokenizer.all_special_tokens)
    specials += [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return TextStops(sorted(set(specials)))
