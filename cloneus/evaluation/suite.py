"""Run every measurement on one checkpoint, finetuned and base, and write eval.json, eval.png and eval.html.

Budgets bound the work: `max_conversations` for perplexity, `max_turns` next-speaker turns, `max_replies`
generated replies per model. The base model is the same weights with the LoRA adapter disabled, scored on the
same tokens, turns and contexts; the prefix cache is cleared around it so no finetuned KV is reused.
Progress goes to `progress_file` as JSON lines the bot's job watcher reads (`start`, `log`, then `done` with the
summary or `error`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cloneus.errors import CloneusError
from cloneus.evaluation.heldout import (
    Conversation,
    Moment,
    cloneable_conversations,
    member_moments,
    reply_moments,
    speaker_turns,
)
from cloneus.evaluation.intervals import paired_comparison
from cloneus.evaluation.perplexity import perplexity_by_member
from cloneus.evaluation.speaker import most_frequent_guess, next_speaker
from cloneus.evaluation.surface import normalise, surface_stats
from cloneus.io import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

MAX_CONVERSATIONS = 40
MAX_TURNS = 300
MAX_REPLIES = 40
REPLY_MAX_NEW_TOKENS = 48
REPLY_BATCH = 8  # rows per batched generate: CPU decoding reads the weights once per step for the whole batch
SAMPLE_CONTEXT_MESSAGES = 4
HUMAN_SLOT = {"fooled_rate": None, "judgements": 0, "source": None}
# The bot's "Real or clone?" game writes the served checkpoint's rates here after every game (bot/game.py).
HUMAN_FILE = "game_fidelity.json"


def human_judgements(checkpoint: Path) -> dict[str, Any]:
    """The game's fooled rate for `checkpoint` (clone replies people judged real), or the empty slot."""
    import json

    path = Path(checkpoint) / HUMAN_FILE
    if not path.is_file():
        return dict(HUMAN_SLOT)
    game = json.loads(path.read_text(encoding="utf-8"))
    real = game.get("real_judged_real_rate")
    baseline = f"; real messages judged real {real:.0%} of {game.get('real_votes', 0)}" if real is not None else ""
    return {
        "fooled_rate": game.get("fooled_rate"),
        "judgements": game.get("clone_votes", 0),
        "source": f"Real or clone? game, model {game.get('model')}{baseline}",
    }


@dataclass
class Progress:
    """Counts work units and appends `log` events (step, total, elapsed, ETA) to the progress file, if any."""

    total: int
    paths: list[Path]
    step: int = 0
    started: float = field(default_factory=time.monotonic)

    def write(self, event: str, **fields: Any) -> None:
        from cloneus.training.rundir import ProgressLog

        if self.paths:
            ProgressLog(self.paths).write(event, **fields)

    def tick(self, units: int = 1) -> None:
        """One `log` event per finished unit, also when a batch finishes several at once."""
        for _ in range(units):
            self.step += 1
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.step * (self.total - self.step)
            self.write("log", step=self.step, total=self.total, elapsed_s=round(elapsed, 1), eta_s=round(eta, 1))


def _replies(clone: Any, conversations: Sequence[Conversation], moments: Sequence[Moment], progress) -> list[str]:
    """The true author's reply at each moment, sampled with the checkpoint's defaults, seeded, in batches."""
    requests = [(conversations[m.conversation][: m.turn], m.author) for m in moments]
    replies = clone.generate_many(
        requests, batch_size=REPLY_BATCH, on_batch=progress.tick, seed=0, max_new_tokens=REPLY_MAX_NEW_TOKENS
    )
    return [r.strip() for r in replies]


@dataclass(frozen=True)
class Selection:
    """What every model is scored on: the same conversations, turns and reply moments."""

    members: list[str]
    conversations: list[Conversation]
    perplexity_conversations: list[Conversation]
    turns: list[Moment]
    moments: list[Moment]
    train_messages: list[tuple[str, str]]
    held_out_conversations: int


def _select(clone: Any, checkpoint: Path, chatlog, max_conversations: int, max_turns: int, max_replies: int):
    from cloneus.data.dataset import prepare_dataset, split_messages

    data = prepare_dataset(clone.config, clone.tokenizer, chatlog, clone.users)
    if data.eval is None or not data.eval_conversations:
        raise CloneusError(
            f"{checkpoint}: its config holds out no conversations (dataset.eval_frac="
            f"{clone.config.dataset.eval_frac}); nothing to evaluate"
        )
    train_messages, _ = split_messages(clone.config, clone.tokenizer, chatlog, clone.users)
    members = [u.display_name for u in clone.users.trainable()]  # most training messages first
    conversations = cloneable_conversations(data.eval_conversations, members)
    return Selection(
        members=members,
        conversations=conversations,
        perplexity_conversations=conversations[:max_conversations],
        turns=speaker_turns(conversations, members, max_turns),
        moments=reply_moments(conversations, members, max_replies),
        train_messages=train_messages,
        held_out_conversations=len(data.eval_conversations),
    )


def _score_model(clone: Any, model: Any, sel: Selection, progress: Progress) -> dict[str, Any]:
    """The three model-dependent measurements, each timed: the seconds say which budget to cut when eval is slow."""
    seconds: dict[str, float] = {}
    with _timed(seconds, "perplexity"):
        ppl = perplexity_by_member(model, clone.formatter, sel.perplexity_conversations, sel.members, progress.tick)
    with _timed(seconds, "next_speaker"):
        speaker = next_speaker(clone, sel.conversations, sel.turns, sel.members, progress.tick)
    with _timed(seconds, "replies"):
        replies = _replies(clone, sel.conversations, sel.moments, progress)
    return {"perplexity": ppl, "next_speaker": speaker, "replies": replies, "seconds": seconds}


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    seconds[stage] = round(time.monotonic() - started, 1)


@contextlib.contextmanager
def _base_model(clone: Any) -> Iterator[Any]:
    """The adapter disabled, with the prefix cache emptied before and after (finetuned KV is not base KV)."""
    backend = clone.backend
    backend.prefix.clear()
    try:
        with backend.model.disable_adapter():
            yield backend.model
    finally:
        backend.prefix.clear()


def _surface_by_member(texts, authors, contexts, train_texts, members) -> dict[str, Any]:
    per = {}
    for member in members:
        idx = [i for i, a in enumerate(authors) if a == member]
        per[member] = surface_stats([texts[i] for i in idx], [contexts[i] for i in idx], train_texts)
    return {**surface_stats(texts, contexts, train_texts), "members": per}


def _attribution(train_messages, members, judged: dict[str, tuple[list[str], list[str]]]) -> dict[str, Any]:
    from cloneus.evaluation.style import StyleClassifier

    try:
        classifier = StyleClassifier([t for _, t in train_messages], [a for a, _ in train_messages], members)
    except ValueError as e:
        logger.warning("no style attribution: %s", e)
        return {"skipped": str(e)}
    out: dict[str, Any] = {"train_messages": classifier.train_messages, "classes": classifier.members}
    correct = {name: classifier.correct(texts, authors) for name, (texts, authors) in judged.items()}
    for name, (texts, authors) in judged.items():
        out[name] = classifier.attribution(texts, authors, correct[name])
    if "finetuned" in judged and "base" in judged:
        # Same contexts and authors for both, so the paired test says whether the gap is more than sampling luck.
        out["finetuned_vs_base"] = paired_comparison("finetuned", correct["finetuned"], "base", correct["base"])
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The handful of figures the bot shows in `/model list` and `/model status` (and the bench compares)."""
    ppl, spk, attr = report["perplexity"], report["next_speaker"], report["attribution"]
    out: dict[str, Any] = {
        "perplexity": ppl["finetuned"]["perplexity"],
        "speaker_top1": spk["finetuned"]["top1"],
        "speaker_top1_most_frequent": spk["most_frequent"]["top1"],
        "speaker_vs_most_frequent": _ratio(spk["finetuned"]["top1"], spk["most_frequent"]["top1"]),
        "attribution": attr.get("finetuned", {}).get("accuracy"),
        "attribution_real": attr.get("real", {}).get("accuracy"),
        "chance": report["chance"],
        "fooled_rate": report["human"]["fooled_rate"],
    }
    # Flat scalars, like every other summary figure: the bot's registry and the bench read them by key.
    for key, ci in (
        ("speaker_top1", spk["finetuned"].get("top1_ci95")),
        ("attribution", attr.get("finetuned", {}).get("ci95")),
    ):
        out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = ci or (None, None)
    if "base" in ppl:
        out["perplexity_base"] = ppl["base"]["perplexity"]
        out["perplexity_vs_base"] = _ratio(ppl["finetuned"]["perplexity"], ppl["base"]["perplexity"])
        out["speaker_top1_base"] = spk["base"]["top1"]
        out["attribution_base"] = attr.get("base", {}).get("accuracy")
        out["attribution_vs_base"] = _ratio(out["attribution"], out["attribution_base"])
        out["attribution_p_vs_base"] = attr.get("finetuned_vs_base", {}).get("p_value")
    out["attribution_vs_real"] = _ratio(out["attribution"], out["attribution_real"])
    return out


def _samples(conversations, moments, replies: dict[str, list[str]]) -> list[dict[str, Any]]:
    rows = []
    for i, m in enumerate(moments):
        conv = conversations[m.conversation]
        context = [list(msg) for msg in conv[max(0, m.turn - SAMPLE_CONTEXT_MESSAGES) : m.turn]]
        row = {"author": m.author, "context": context, "real": conv[m.turn][1]}
        rows.append(row | {name: texts[i] for name, texts in replies.items()})
    return rows


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """eval.json, eval.png and eval.html (with the chart inline), each written atomically."""
    from cloneus.evaluation.chart import render_chart
    from cloneus.evaluation.html import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    png = render_chart(report)
    paths = {"json": out_dir / "eval.json", "png": out_dir / "eval.png", "html": out_dir / "eval.html"}
    atomic_write_json(paths["json"], report)
    atomic_write_bytes(paths["png"], png)
    atomic_write_text(paths["html"], render_html(report, png))
    return paths


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    base: bool = True,
    chatlog: str | Path | None = None,
    max_conversations: int = MAX_CONVERSATIONS,
    max_turns: int = MAX_TURNS,
    max_replies: int = MAX_REPLIES,
    device: str | None = None,
    out_dir: Path | None = None,
    progress_file: Path | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on its held-out split; write eval.json, eval.png and eval.html to `out_dir`.

    Args:
        checkpoint (`Path`): a `checkpoint-N` directory written by `train`.
        base (`bool`, *optional*, defaults to `True`): also score the base model (adapter disabled).
        chatlog (`str | Path`, *optional*): the chat export; defaults to the one recorded in the checkpoint.
        max_conversations (`int`, *optional*): held-out conversations scored for perplexity.
        max_turns (`int`, *optional*): next-speaker turns scored (all of them when the split has fewer).
        max_replies (`int`, *optional*): replies generated per model, spread over members.
        out_dir (`Path`, *optional*, defaults to `checkpoint`): where the three files go.
        progress_file (`Path`, *optional*): JSON-lines progress for the bot.

    Raises:
        CloneusError: no held-out split (`dataset.eval_frac` 0 or one session), or no chat export recorded.
    """
    progress = Progress(total=0, paths=[Path(progress_file)] if progress_file else [])
    try:
        report = _evaluate(
            Path(checkpoint), progress, base, chatlog, max_conversations, max_turns, max_replies, device
        )
        paths = write_outputs(report, Path(out_dir) if out_dir else Path(checkpoint))
    except Exception as e:
        progress.write("error", message=str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise
    progress.write(
        "done", checkpoint=str(checkpoint), metrics=report["summary"], files={k: str(p) for k, p in paths.items()}
    )
    return report


def _evaluate(checkpoint, progress, base, chatlog, max_conversations, max_turns, max_replies, device) -> dict:
    from cloneus.inference.cloneus import Cloneus

    started = time.monotonic()
    clone = Cloneus.from_pretrained(checkpoint, device=device)
    try:
        sel = _select(clone, checkpoint, chatlog, max_conversations, max_turns, max_replies)
        progress.total = (len(sel.perplexity_conversations) + len(sel.turns) + len(sel.moments)) * (1 + base)
        progress.write("start", total=progress.total, checkpoint=str(checkpoint))
        scores = {"finetuned": _score_model(clone, clone.backend.model, sel, progress)}
        if base:
            with _base_model(clone) as base_model:
                scores["base"] = _score_model(clone, base_model, sel, progress)
    finally:
        clone.unload()
    budget = {"max_conversations": max_conversations, "max_turns": max_turns, "max_replies": max_replies}
    report = _report(checkpoint, sel, scores, budget)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["stage_seconds"] = {name: s["seconds"] for name, s in scores.items()}
    return report


def _text_figures(sel: Selection, scores: dict[str, dict]) -> tuple[dict, dict, int]:
    """Style attribution and surface statistics of real held-out, finetuned and base text (and how many real)."""
    convs = sel.conversations
    real = member_moments(convs, sel.members)
    real_texts = [convs[m.conversation][m.turn][1] for m in real]
    real_authors = [m.author for m in real]
    real_contexts = [[t for _, t in convs[m.conversation][: m.turn]] for m in real]
    reply_authors = [m.author for m in sel.moments]
    reply_contexts = [[t for _, t in convs[m.conversation][: m.turn]] for m in sel.moments]
    train_texts = {normalise(t) for _, t in sel.train_messages}
    judged = {"real": (real_texts, real_authors)}
    judged |= {name: (s["replies"], reply_authors) for name, s in scores.items()}
    surface = {"real": _surface_by_member(real_texts, real_authors, real_contexts, train_texts, sel.members)}
    for name, s in scores.items():
        surface[name] = _surface_by_member(s["replies"], reply_authors, reply_contexts, train_texts, sel.members)
    return _attribution(sel.train_messages, sel.members, judged), surface, len(real)


def _report(checkpoint: Path, sel: Selection, scores: dict[str, dict], budget: dict[str, int]) -> dict[str, Any]:
    attribution, surface, real_messages = _text_figures(sel, scores)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "members": sel.members,
        "chance": 1 / len(sel.members) if sel.members else None,
        "budget": budget,
        "split": {
            "conversations": sel.held_out_conversations,
            "perplexity_conversations": len(sel.perplexity_conversations),
            "turns": len(sel.turns),
            "replies": len(sel.moments),
            "real_messages": real_messages,
            "train_messages": len(sel.train_messages),
        },
        "perplexity": {name: s["perplexity"] for name, s in scores.items()},
        "next_speaker": {name: s["next_speaker"] for name, s in scores.items()}
        | {"most_frequent": most_frequent_guess(sel.turns, sel.members)},
        "attribution": attribution,
        "surface": surface,
        "samples": _samples(sel.conversations, sel.moments, {name: s["replies"] for name, s in scores.items()}),
        # Filled by people, not by this command (the bot's Real-or-clone game); kept here so reports line up.
        "human": human_judgements(checkpoint),
    }
    report["summary"] = summarise(report)
    return report
