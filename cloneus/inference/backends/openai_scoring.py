"""Next-speaker scores from a vLLM server, through generation logprobs rather than prompt logprobs.

Why not `echo` + prompt logprobs: on vLLM's CPU build with a LoRA adapter, prompt logprobs crash the engine
(`EngineDeadError` in `add_lora_logits`), and even where they work they cost a full prefill per candidate. Instead,
the candidates' tokens are split exactly as the local backend splits them (the checkpoint's tokenizer over
`prefix + tag`, tails after the tokens all candidates share), and put in a trie. Every trie node that has children
is one prompt of token ids with `max_tokens=1`, and `logprob_token_ids` asks for the log-probability of each
child token: vLLM returns them from the raw logits, before any sampling, so the sum along a candidate's path is
the same log-probability the local backend computes in one forward pass. All nodes go in one request (a list of
prompts); prefix caching makes the shared history cost one prefill.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError
from cloneus.inference.prefix_cache import common_prefix_length

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TOKEN_KEY = "token_id:"


def candidate_tails(
    tokenizer: PreTrainedTokenizerBase, prefix: str, continuations: list[str]
) -> tuple[list[int], list[list[int]]]:
    """The token ids all candidates share, and each candidate's own tail, as `LocalBackend` splits them."""
    fulls = [tokenizer(prefix + c, add_special_tokens=False)["input_ids"] for c in continuations]
    shared = min(common_prefix_length(fulls[0], f) for f in fulls)
    if shared == 0:
        raise ValueError("the candidate continuations share no prefix tokens")
    return fulls[0][:shared], [f[shared:] for f in fulls]


def trie_nodes(tails: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    """Each path of the tails' trie that has children, mapped to its child token ids (in first-seen order)."""
    nodes: dict[tuple[int, ...], list[int]] = {}
    for tail in tails:
        for depth, token in enumerate(tail):
            children = nodes.setdefault(tuple(tail[:depth]), [])
            if token not in children:
                children.append(token)
    return nodes


def scoring_body(model: str, shared: list[int], nodes: dict[tuple[int, ...], list[int]]) -> dict[str, Any]:
    """One `/completions` request that returns every node's child-token logprobs."""
    wanted = sorted({t for children in nodes.values() for t in children})
    return {
        "model": model,
        "prompt": [shared + list(path) for path in nodes],
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": 1,
        "logprob_token_ids": wanted,
        "return_tokens_as_token_ids": True,
    }


def tail_scores(reply: dict[str, Any], nodes: dict[tuple[int, ...], list[int]], tails: list[list[int]]) -> list[float]:
    """Sum each tail's child logprobs along its trie path, from the reply to `scoring_body`.

    Raises:
        CloneusError: a choice is missing, or the server left out a requested token's logprob.
    """
    choices = {c.get("index", i): c for i, c in enumerate(reply.get("choices") or [])}
    if sorted(choices) != list(range(len(nodes))):
        raise CloneusError(f"next-speaker scoring: expected {len(nodes)} choices, got {len(choices)}")
    logprobs: dict[tuple[int, ...], dict[int, float]] = {}
    for i, path in enumerate(nodes):
        top = ((choices[i].get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
        logprobs[path] = {int(k.removeprefix(TOKEN_KEY)): v for k, v in top.items() if k.startswith(TOKEN_KEY)}
    scores = []
    for tail in tails:
        total = 0.0
        for depth, token in enumerate(tail):
            value = logprobs[tuple(tail[:depth])].get(token)
            if value is None:
                raise CloneusError(
                    f"next-speaker scoring: the server returned no logprob for token {token}; it needs "
                    "vLLM's logprob_token_ids and return_tokens_as_token_ids (vLLM >= 0.11)"
                )
            total += value
        scores.append(total)
    return scores
