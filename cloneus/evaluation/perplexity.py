"""Held-out perplexity per member: the loss on each member's trained tokens (tag, text and end of turn).

Each conversation is rendered by the checkpoint's `ChatFormatter`, the text the model trained on, and every
token is assigned to the message its first character falls in. Only tokens inside the formatter's label spans
count, as in training. Per-member and overall figures are token-weighted means of the same token losses, so the
overall one is exactly the pooled per-member one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

from cloneus.errors import CloneusError

MAX_LOSS = 50.0  # exp() of a loss past this overflows the report; such a model is broken anyway


def token_losses(model: Any, formatter: Any, conversation: Sequence[tuple[str, str]]) -> list[tuple[str, float]]:
    """`(author, nll)` for every labelled token of one rendered conversation (the first token has no prediction)."""
    import torch

    rendered = formatter.render(list(conversation))
    enc = formatter.tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(ids) < 2:
        return []
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, :-1]  # (T-1, V)
    nll = torch.nn.functional.cross_entropy(
        logits.float(), torch.tensor(ids[1:], device=logits.device), reduction="none"
    ).tolist()  # (T-1,)
    starts = [s for s, _ in rendered.message_spans]
    labelled = rendered.label_spans
    out = []
    for j in range(1, len(ids)):
        pos = offsets[j][0]
        k = bisect.bisect_right(labelled, (pos, math.inf)) - 1
        if k < 0 or not labelled[k][0] <= pos < labelled[k][1]:
            continue
        message = bisect.bisect_right(starts, pos) - 1
        out.append((conversation[message][0], nll[j - 1]))
    return out


def _summary(losses: list[float]) -> dict[str, Any]:
    if not losses:
        return {"loss": None, "perplexity": None, "tokens": 0}
    loss = math.fsum(losses) / len(losses)
    return {"loss": loss, "perplexity": math.exp(min(loss, MAX_LOSS)), "tokens": len(losses)}


def perplexity_by_member(
    model: Any,
    formatter: Any,
    conversations: Sequence[Sequence[tuple[str, str]]],
    members: Sequence[str],
    on_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Mean loss and perplexity over all labelled held-out tokens, overall and for each member.

    Raises:
        CloneusError: the conversations have no labelled tokens at all.
    """
    per: dict[str, list[float]] = {m: [] for m in members}
    pooled: list[float] = []
    for conversation in conversations:
        for author, loss in token_losses(model, formatter, conversation):
            pooled.append(loss)
            per.setdefault(author, []).append(loss)
        if on_step is not None:
            on_step()
    if not pooled:
        raise CloneusError("the held-out conversations have no trained tokens to score")
    return {**_summary(pooled), "members": {m: _summary(per[m]) for m in members}}
