"""Preference tuning from the group's reactions: `cloneus train --feedback DB --from CHECKPOINT`.

The served checkpoint's adapter is loaded trainable, and TRL makes a frozen copy of it (the `ref` adapter) to
measure how far tuning moves: `KTOTrainer` learns from unpaired 👍/👎, `DPOTrainer` from liked/disliked versions of
one reply when there are enough of them. Everything else is the ordinary training run: a new run directory laid
out by `rundir.py`, the progress/checkpoint/signal callbacks of `callbacks.py`, `--resume`, `loss.png`.

Fidelity: every example is tokenized here, from the checkpoint's own `ChatFormatter`, as the prompt the bot sent
(`generation_prompt`, with any seed text) followed by the reply and the end of turn that training put after every
message. TRL's own preparation would append an EOS token and let the tokenizer add its special tokens, neither of
which training or serving does, so the trainers below take our tokenized rows as they are.

The held-out reacted-to replies are scored before and after with the mean per-token log-likelihood of each reply
(length-normalised, so a rule such as "dislikes long replies" is not rewarded by length alone): the margin between
liked and disliked replies, and the fraction of pairs ranked the right way round.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError
from cloneus.io import atomic_write_json
from cloneus.training.feedback_data import FeedbackExample, FeedbackSet, read_feedback
from cloneus.training.rundir import ProgressLog, RunDir, default_run_name

if TYPE_CHECKING:
    from cloneus.config import CloneusConfig
    from cloneus.data.formatting import ChatFormatter
    from cloneus.data.users import UserIndex

logger = logging.getLogger(__name__)

FEEDBACK_FILE = "feedback.json"  # in the run directory: source checkpoint, database, method, split, scores
CROSS_PAIRS_LIMIT = 2000


@dataclass
class FeedbackResult:
    """What a feedback run ended with; `metrics` holds the before/after scores (also in metrics.json)."""

    run_dir: Path
    checkpoint: Path | None
    interrupted: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Tokenized:
    """One example as token ids: the prompt the bot sent, and the reply with its end of turn."""

    prompt_ids: list[int]
    completion_ids: list[int]


class ExampleEncoder:
    """Feedback examples → the exact prompt and completion tokens training and serving use for this checkpoint.

    The history goes through the checkpoint's `MessageNormalizer`, as `Cloneus` does before every prompt; the
    reply gets the same YouTube tags and special-token removal a training message gets.
    """

    def __init__(self, cfg: CloneusConfig, tokenizer, users: UserIndex):
        from cloneus.data.formatting import ChatFormatter
        from cloneus.data.normalize import MessageNormalizer
        from cloneus.plugins.youtube import YouTubeLinks

        self.tokenizer = tokenizer
        self.users = users
        self.formatter: ChatFormatter = ChatFormatter(tokenizer, cfg.format, cfg.prompt, users)
        self.links = YouTubeLinks.from_env(cfg.youtube)
        self.normalizer = MessageNormalizer(cfg.dataset, users, tokenizer, self.links)

    def texts(self, ex: FeedbackExample) -> tuple[str, str]:
        """`(prompt, completion)` as text; the completion ends with the end of turn training put after a message."""
        speaker = self.users.resolve(ex.author).display_name
        history = self.normalizer.pairs(ex.history)
        reply = ex.text
        if self.links is not None:
            with self.links:
                reply = self.links.encode_texts([reply])[0]
        control = self.normalizer.control
        reply = control.remove(reply)
        seed = control.remove(ex.seed_text) if ex.seed_text else ""
        seed = seed if reply.startswith(seed) else ""
        prompt = self.formatter.generation_prompt(history, speaker, seed or None)
        _, closing = self.formatter.wrap(len(history), speaker)
        return prompt, reply[len(seed) :] + closing

    def encode(self, ex: FeedbackExample) -> Tokenized:
        """Tokens of prompt + completion as one text (as training tokenizes a conversation), split where the
        prompt's own tokens stop matching."""
        prompt, completion = self.texts(ex)
        full = self.tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
        alone = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        k = next((i for i, (a, b) in enumerate(zip(alone, full, strict=False)) if a != b), len(alone))
        return Tokenized(full[:k], full[k:])


def mean_logprob(model, rows: list[Tokenized]) -> list[float]:
    """Mean per-token log-likelihood of each completion after its prompt."""
    import torch

    scores = []
    for row in rows:
        ids = torch.tensor([row.prompt_ids + row.completion_ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # (T-1, V)
        targets = ids[0, 1:]
        logps = logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]  # (T-1,)
        scores.append(logps[len(row.prompt_ids) - 1 :].mean().item())
    return scores


def preference_scores(model, encoder: ExampleEncoder, heldout: FeedbackSet) -> dict[str, Any]:
    """Margin (mean liked − mean disliked log-likelihood per token) and pair accuracy on held-out feedback.

    Pairs are the held-out regenerated pairs when there are any ("versions"), else every held-out liked reply
    against every disliked one ("cross", capped at `CROSS_PAIRS_LIMIT`).
    """
    examples = heldout.examples
    if not examples:
        return {"examples": 0}
    was_training = model.training
    model.eval()
    scores = dict(zip(map(id, examples), mean_logprob(model, [encoder.encode(ex) for ex in examples]), strict=True))
    model.train(was_training)
    liked = [scores[id(ex)] for ex in examples if ex.liked]
    disliked = [scores[id(ex)] for ex in examples if not ex.liked]
    pairs = [(scores[id(p.chosen)], scores[id(p.rejected)]) for p in heldout.pairs]
    kind = "versions"
    if not pairs:
        kind = "cross"
        pairs = [(c, r) for c in liked for r in disliked][:CROSS_PAIRS_LIMIT]
    out: dict[str, Any] = {"examples": len(examples), "liked": len(liked), "disliked": len(disliked)}
    if liked:
        out["liked_mean_logprob"] = sum(liked) / len(liked)
    if disliked:
        out["disliked_mean_logprob"] = sum(disliked) / len(disliked)
    if liked and disliked:
        out["margin"] = out["liked_mean_logprob"] - out["disliked_mean_logprob"]
    if pairs:
        out |= {"pairs": len(pairs), "pair_kind": kind, "pair_accuracy": sum(c > r for c, r in pairs) / len(pairs)}
    return out


def choose_method(cfg: CloneusConfig, train: FeedbackSet) -> str:
    """`kto` or `dpo`, or a refusal that says how much more feedback is needed."""
    fb = cfg.feedback
    counts = train.counts()
    n_examples, n_pairs = counts["liked"] + counts["disliked"], counts["pairs"]
    if fb.method == "dpo" or (fb.method == "auto" and n_pairs >= fb.min_pairs):
        if n_pairs < fb.min_pairs:
            raise CloneusError(
                f"feedback.method=dpo needs {fb.min_pairs} liked/disliked pairs (versions of one regenerated reply), "
                f"found {n_pairs}: {fb.min_pairs - n_pairs} more needed (or use feedback.method=kto)"
            )
        return "dpo"
    if n_examples < fb.min_examples:
        raise CloneusError(
            f"not enough feedback to tune on: {n_examples} thumbed replies for training ({counts['liked']} liked, "
            f"{counts['disliked']} disliked) after holding out {fb.holdout_frac:.0%}; feedback.min_examples is "
            f"{fb.min_examples}, so {fb.min_examples - n_examples} more are needed"
        )
    if not counts["liked"] or not counts["disliked"]:
        raise CloneusError(
            f"kto needs both liked and disliked replies; found {counts['liked']} liked and "
            f"{counts['disliked']} disliked: at least 1 more {'disliked' if counts['liked'] else 'liked'} needed"
        )
    return "kto"


def feedback_config(
    config_file: str | Path, feedback_from: str | Path | None = None, overrides: list[str] | None = None
) -> CloneusConfig:
    """A feedback run's config: a checkpoint's (or run's) own config file, with the `feedback` section and
    `training.output_root` of `feedback_from` (e.g. config/train_config.yaml) when given, then `--set` overrides.

    The new run goes where `feedback_from` puts runs, so a bot's tuned checkpoints sit beside its trained ones.
    """
    from cloneus.config import apply_overrides, config_from_dict
    from cloneus.io import read_yaml_mapping

    tree = read_yaml_mapping(Path(config_file), "config file", "sections at the top level")
    if feedback_from is not None:
        own = read_yaml_mapping(Path(feedback_from), "config file", "sections at the top level")
        tree["feedback"] = own.get("feedback", {})
        output_root = (own.get("training") or {}).get("output_root")
        if output_root is not None:
            tree.setdefault("training", {})["output_root"] = output_root
    return config_from_dict(apply_overrides(tree, overrides or []), str(config_file))


def plan_feedback(cfg: CloneusConfig, database: str | Path, source: str | Path) -> dict[str, Any]:
    """What a run would train on, without loading a model: method and counts, or the refusal a run would give.

    The bot calls this before it starts a job, so too little feedback is refused at once.
    """
    from cloneus.inference.checkpoint import read_checkpoint

    feedback = read_feedback(database, read_checkpoint(source).users)
    train, heldout = feedback.split(cfg.feedback.holdout_frac, cfg.training.seed)
    return {"method": choose_method(cfg, train), "train": train.counts(), "heldout": heldout.counts()}


def _dataset(method: str, encoder: ExampleEncoder, train: FeedbackSet):
    from datasets import Dataset

    if method == "dpo":
        rows = []
        for pair in train.pairs:
            chosen, rejected = encoder.encode(pair.chosen), encoder.encode(pair.rejected)
            rows.append(
                {
                    "prompt_ids": chosen.prompt_ids,
                    "chosen_ids": chosen.completion_ids,
                    "rejected_ids": rejected.completion_ids,
                }
            )
        return Dataset.from_list(rows)
    rows = []
    for ex in train.examples:
        tok = encoder.encode(ex)
        rows.append({"prompt_ids": tok.prompt_ids, "completion_ids": tok.completion_ids, "label": ex.liked})
    return Dataset.from_list(rows)


def _trainer_args(method: str, cfg: CloneusConfig, output_dir: Path):
    """The run's `training` section as TRL config, with the `feedback` section's optimisation keys on top."""
    from trl import DPOConfig, KTOConfig

    from cloneus.training.trainer import training_argument_values

    fb = cfg.feedback
    values = training_argument_values(cfg, output_dir, has_eval=False) | {
        "learning_rate": fb.learning_rate,
        "per_device_train_batch_size": fb.batch_size,
        "per_device_eval_batch_size": fb.batch_size,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": fb.num_epochs,
        "max_steps": fb.max_steps or -1,
        "beta": fb.beta,
        "max_length": fb.max_length or cfg.training.chunk_size,
    }
    return (DPOConfig if method == "dpo" else KTOConfig)(**values)


def _load_policy(cfg: CloneusConfig, checkpoint: Path):
    """The base model with the checkpoint's adapter, trainable, as adapter `default` (TRL copies it to `ref`)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from cloneus.models.loading import load_model, pick_device
    from cloneus.models.lora import peft_model_init

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model, _ = load_model(cfg.model, device=pick_device(), for_training=True, max_seq_length=cfg.training.chunk_size)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    with peft_model_init():
        return PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True), tokenizer


def _split(cfg: CloneusConfig, feedback: FeedbackSet, saved: dict[str, Any] | None) -> tuple[FeedbackSet, FeedbackSet]:
    """A new split, or on resume the run's own: the same train and held-out replies, whatever arrived since."""
    if saved is None:
        return feedback.split(cfg.feedback.holdout_frac, cfg.training.seed)
    train_ids, held_ids = set(saved["train_message_ids"]), set(saved["heldout_message_ids"])
    return (
        FeedbackSet([ex for ex in feedback.examples if ex.message_id in train_ids], dict(feedback.skipped)),
        FeedbackSet([ex for ex in feedback.examples if ex.message_id in held_ids]),
    )


def train_feedback(
    cfg: CloneusConfig,
    database: str | Path,
    source: str | Path | None,
    *,
    run_name: str | None = None,
    resume: str | Path | None = None,
    progress_file: str | Path | None = None,
) -> FeedbackResult:
    """Tune a checkpoint's adapter on the bot's 👍/👎 and write a new run directory.

    Args:
        cfg (`CloneusConfig`): the source checkpoint's config; its `feedback` section sets the tuning.
        database (`str | Path`): the bot's SQLite file.
        source (`str | Path`): the `checkpoint-N` being served; read from the run's `feedback.json` when resuming.
        run_name (`str`, *optional*): defaults to `feedback-<UTC timestamp>`, next to the other runs of this model.
        resume (`str | Path`, *optional*): a `checkpoint-N` of an interrupted feedback run.
        progress_file (`str | Path`, *optional*): an extra copy of `progress.jsonl` (the bot's job runner).

    Raises:
        CloneusError: missing checkpoint or database, or too little feedback (saying how much more is needed).
    """
    progress = ProgressLog([Path(progress_file)] if progress_file else [])
    try:
        return _train_feedback(cfg, Path(database), source, run_name, resume, progress)
    except Exception as e:
        progress.write("error", message=f"{type(e).__name__}: {e}")
        raise


def _train_feedback(cfg, database: Path, source, run_name, resume, progress: ProgressLog) -> FeedbackResult:
    from cloneus.inference.checkpoint import read_checkpoint
    from cloneus.models.loading import resolve_model

    saved = None
    if resume is not None:
        run = RunDir.of_checkpoint(resume)
        saved = json.loads((run.path / FEEDBACK_FILE).read_text(encoding="utf-8"))
        source = saved["source_checkpoint"]
    elif source is None:
        raise CloneusError("--feedback needs --from CHECKPOINT: the served checkpoint whose adapter is tuned")
    info = read_checkpoint(source)
    users = info.users
    feedback = read_feedback(database, users)
    train, heldout = _split(cfg, feedback, saved)
    method = saved["method"] if saved else choose_method(cfg, train)
    if resume is None:
        alias = resolve_model(cfg.model.model_id).alias
        run = RunDir.for_new_run(cfg, alias, run_name or f"feedback-{default_run_name()}")
        run.write_start(cfg, users)
    progress.paths.insert(0, run.progress_path)
    logger.info("%s on %s: train %s, held out %s", method, info.path, train.counts(), heldout.counts())
    return _run(cfg, run, progress, info.path, database, method, train, heldout, users, resume, saved)


def _run(cfg, run: RunDir, progress, source: Path, database: Path, method, train, heldout, users, resume, saved):
    from cloneus.library_bars import library_bars_off
    from cloneus.training.callbacks import ProgressCallback, StopOnSignalCallback
    from cloneus.training.console import use_console
    from cloneus.training.feedback_trainers import TokenizedDPOTrainer, TokenizedKTOTrainer
    from cloneus.training.trainer import _final_metrics

    started = time.monotonic()
    model, tokenizer = _load_policy(cfg, source)
    encoder = ExampleEncoder(cfg, tokenizer, users)
    before = saved["before"] if saved else preference_scores(model, encoder, heldout)
    record = {
        "source_checkpoint": str(source),
        "database": str(database),
        "method": method,
        "train": train.counts(),
        "heldout": heldout.counts(),
        "skipped": train.skipped,
        "train_message_ids": sorted({ex.message_id for ex in train.examples}),
        "heldout_message_ids": sorted({ex.message_id for ex in heldout.examples}),
        "before": before,
    }
    atomic_write_json(run.path / FEEDBACK_FILE, record)
    stopper = StopOnSignalCallback()
    trainer_cls = TokenizedDPOTrainer if method == "dpo" else TokenizedKTOTrainer
    trainer = trainer_cls(
        checkpoint_files=functools.partial(run.write_checkpoint_extras, cfg=cfg, users=users),
        model=model,
        args=_trainer_args(method, cfg, run.path),
        train_dataset=_dataset(method, encoder, train).shuffle(seed=cfg.training.seed),
        processing_class=tokenizer,
        callbacks=[ProgressCallback(progress, run), stopper],
    )
    use_console(trainer)
    with stopper, library_bars_off():
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    after = preference_scores(trainer.model, encoder, heldout)

    checkpoints = run.checkpoints()
    checkpoint = checkpoints[-1] if checkpoints else None
    metrics = _final_metrics(trainer, output, started, None) | {
        "feedback": {"method": method, "before": before, "after": after}
    }
    atomic_write_json(run.path / FEEDBACK_FILE, record | {"after": after})
    run.write_metrics(metrics)
    run.write_loss_plot(trainer.state.log_history)
    if stopper.received:
        progress.write("interrupted", checkpoint=str(checkpoint) if checkpoint else None, signal=stopper.received)
    else:
        progress.write("done", checkpoint=str(checkpoint) if checkpoint else None, metrics=metrics)
    return FeedbackResult(run.path, checkpoint, stopper.received, metrics)
