"""Clone quality on held-out conversations: `python -m cloneus eval CHECKPOINT [--base]`.

Three measurements, each against a reference point:
- held-out loss and perplexity of the finetuned model, and of the base model with the adapter disabled (same
  prompt format, same tokens), so the gain from finetuning is visible;
- next-speaker accuracy (top-1, top-3): every trainable author's tag is scored after the history, exactly as
  `ChatFormatter.speaker_prompt` lays it out, against always guessing the most frequent authors;
- a few sample replies next to what was really said.

The held-out split is the one training used (the latest `eval_frac` of sessions), rebuilt from the checkpoint's
own config, so nothing here was trained on. Work is bounded by `--max-conversations` and `--max-turns`.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError
from cloneus.io import atomic_write_json

if TYPE_CHECKING:
    from cloneus.inference.cloneus import Cloneus

logger = logging.getLogger(__name__)

SAMPLE_CONTEXT_MESSAGES = 6
SAMPLE_MAX_NEW_TOKENS = 48


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def heldout_loss(model, rows: list[dict[str, list[int]]]) -> tuple[float, int]:
    """Token-weighted mean loss over conversations, each run alone (no packing needed for scoring)."""
    import torch

    total, count = 0.0, 0
    for row in rows:
        ids = torch.tensor([row["input_ids"]], device=model.device)
        labels = torch.tensor(row["labels"], device=model.device)[1:]  # (T-1,)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # (T-1, V)
        keep = labels != -100
        if keep.any():
            total += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
            count += int(keep.sum())
    if count == 0:
        raise CloneusError("the held-out conversations have no trained tokens to score")
    return total / count, count


def continuation_logprobs(model, tokenizer, prefix: str, continuations: list[str]) -> list[float]:
    """log P(continuation | prefix) for each continuation, reusing the prefix's KV cache."""
    import torch

    prefix_ids = _encode(tokenizer, prefix)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prefix_ids], device=model.device), use_cache=True)
    logprobs = out.logits[0].float().log_softmax(-1)  # (T, V)
    scores = []
    for text in continuations:
        full = _encode(tokenizer, prefix + text)
        # Tokens may merge across the prefix/continuation seam; score from the last shared token on.
        k = next((i for i, (a, b) in enumerate(zip(prefix_ids, full, strict=False)) if a != b), len(prefix_ids))
        k = max(1, min(k, len(full) - 1))
        first = logprobs[k - 1, full[k]].item()
        rest = full[k:]
        if len(rest) > 1:
            cache = copy.deepcopy(out.cache)
            if k < len(prefix_ids):
                cache.crop(k - len(prefix_ids))  # a negative count drops that many trailing positions
            with torch.no_grad():
                step = model(input_ids=torch.tensor([rest[:-1]], device=model.device), cache=cache)
            lp = step.logits[0].float().log_softmax(-1)  # (len(rest)-1, V)
            first += lp.gather(-1, torch.tensor(rest[1:], device=lp.device)[:, None]).sum().item()
        scores.append(first)
    return scores


def speaker_accuracy(clone: Cloneus, model, conversations, max_turns: int) -> dict[str, Any]:
    """Top-1/top-3 next-speaker accuracy of `model`, over turns whose author is a trainable user."""
    hits1 = hits3 = turns = 0
    for conversation in conversations:
        for t in range(1, min(len(conversation), max_turns + 1)):
            prefix, options = clone.formatter.speaker_prompt(conversation[:t])
            truth = conversation[t][0]
            if truth not in options:
                continue
            names = list(options)
            scores = continuation_logprobs(model, clone.tokenizer, prefix, [options[n] for n in names])
            ranked = [n for _, n in sorted(zip(scores, names, strict=True), reverse=True)]
            hits1 += ranked[0] == truth
            hits3 += truth in ranked[:3]
            turns += 1
    return {"top1": hits1 / turns if turns else None, "top3": hits3 / turns if turns else None, "turns": turns}


def frequency_baseline(clone: Cloneus, conversations, max_turns: int) -> dict[str, Any]:
    """Always guessing the authors with the most training messages, over the same turns `speaker_accuracy` scores."""
    ranked = [u.display_name for u in clone.users.trainable()]  # already by descending message count
    candidates = set(ranked)
    truths = [c[t][0] for c in conversations for t in range(1, min(len(c), max_turns + 1)) if c[t][0] in candidates]
    n = len(truths)
    return {
        "author": ranked[0] if ranked else None,
        "top1": sum(a == ranked[0] for a in truths) / n if n else None,
        "top3": sum(a in ranked[:3] for a in truths) / n if n else None,
        "turns": n,
    }


def sample_replies(clone: Cloneus, conversations, count: int) -> list[dict[str, Any]]:
    """Generate the real next author's reply for a few held-out moments, with the real reply beside it."""
    trainable = {u.display_name for u in clone.users.trainable()}
    samples = []
    for conversation in conversations:
        if len(samples) >= count:
            break
        t = min(len(conversation) - 1, SAMPLE_CONTEXT_MESSAGES)
        author, reference = conversation[t]
        if t < 1 or author not in trainable:
            continue
        history = conversation[max(0, t - SAMPLE_CONTEXT_MESSAGES) : t]
        reply = clone.generate(history, author, seed=len(samples), max_new_tokens=SAMPLE_MAX_NEW_TOKENS)
        context = [list(m) for m in history[-3:]]
        samples.append({"context": context, "author": author, "reference": reference, "generated": reply})
    return samples


def _score(clone: Cloneus, model, rows, conversations, max_turns: int) -> dict[str, Any]:
    loss, tokens = heldout_loss(model, rows)
    speaker = speaker_accuracy(clone, model, conversations, max_turns)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "tokens": tokens,
        "next_speaker_top1": speaker["top1"],
        "next_speaker_top3": speaker["top3"],
    }


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    base: bool = False,
    chatlog: str | Path | None = None,
    max_conversations: int = 10,
    max_turns: int = 10,
    samples: int = 3,
    device: str | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on its held-out conversations and write `eval.json` into it.

    Args:
        checkpoint (`Path`): a `checkpoint-N` directory written by `train`.
        base (`bool`, *optional*, defaults to `False`): also score the base model (adapter disabled).
        chatlog (`str | Path`, *optional*): the chat export; defaults to the one recorded in the checkpoint.
        max_conversations (`int`, *optional*, defaults to 10): held-out conversations used.
        max_turns (`int`, *optional*, defaults to 10): next-speaker predictions per conversation.
        samples (`int`, *optional*, defaults to 3): sample replies generated.

    Raises:
        CloneusError: no held-out split (`dataset.eval_frac` 0 or one session), or no chat export recorded.
    """
    from cloneus.data.dataset import prepare_dataset
    from cloneus.inference.cloneus import Cloneus

    clone = Cloneus.from_pretrained(checkpoint, device=device)
    model = clone.backend.model
    data = prepare_dataset(clone.config, clone.tokenizer, chatlog, clone.users)
    if data.eval is None or not data.eval_conversations:
        raise CloneusError(
            f"{checkpoint}: its config holds out no conversations (dataset.eval_frac="
            f"{clone.config.dataset.eval_frac}); nothing to evaluate"
        )
    # Conversations among context-only users have no trained tokens and no cloneable next speaker; skip them.
    rows = [row for row in data.eval if any(label != -100 for label in row["labels"])][:max_conversations]
    trainable = {u.display_name for u in clone.users.trainable()}
    conversations = [c for c in data.eval_conversations if any(a in trainable for a, _ in c[1:])]
    conversations = conversations[:max_conversations]
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "conversations": len(rows),
        "finetuned": _score(clone, model, rows, conversations, max_turns),
        "most_frequent_baseline": frequency_baseline(clone, conversations, max_turns),
    }
    if base:
        with model.disable_adapter():
            report["base"] = _score(clone, model, rows, conversations, max_turns)
    report["samples"] = sample_replies(clone, conversations, samples) if samples else []
    atomic_write_json(Path(checkpoint) / "eval.json", report)
    clone.unload()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The eval report as a small text table plus the samples."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    rows = [("finetuned", report["finetuned"])]
    if "base" in report:
        rows.append(("base (no adapter)", report["base"]))
    baseline = report["most_frequent_baseline"]
    lines = [
        f"{report['checkpoint']}: {report['conversations']} held-out conversations, "
        f"{report['finetuned']['tokens']} scored tokens, {baseline['turns']} next-speaker turns",
        f"{'model':<20} {'loss':>7} {'ppl':>9} {'top-1':>7} {'top-3':>7}",
    ]
    for name, r in rows:
        lines.append(
            f"{name:<20} {r['loss']:>7.3f} {r['perplexity']:>9.2f} "
            f"{pct(r['next_speaker_top1']):>7} {pct(r['next_speaker_top3']):>7}"
        )
    always = f"always {baseline['author']}"
    lines.append(f"{always:<20} {'':>7} {'':>9} {pct(baseline['top1']):>7} {pct(baseline['top3']):>7}")
    for s in report["samples"]:
        lines.append("")
        lines.extend(f"  {a}: {t}" for a, t in s["context"])
        lines.append(f"  -> {s['author']} (real): {s['reference']}")
        lines.append(f"  -> {s['author']} (clone): {s['generated']}")
    return "\n".join(lines)
