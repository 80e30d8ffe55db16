"""One training run, start to finish: config → run directory → dataset → LoRA model → Trainer → checkpoints.

The loop is stock `transformers.Trainer`; what is ours is the padding-free collator (`packing.py`), the callbacks
(`callbacks.py`) and the run directory (`rundir.py`). Under `accelerate launch` every rank runs this function;
only the main process writes files, and the run name is agreed on by broadcast so all ranks use one directory.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError, ConfigError
from cloneus.training.rundir import ProgressLog, RunDir, checkpoint_step

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from cloneus.config import CloneusConfig
    from cloneus.data.users import UserIndex

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run ended with.

    Args:
        run_dir (`Path`): the run directory.
        checkpoint (`Path`, *optional*): the last checkpoint saved.
        interrupted (`str`, *optional*): the signal that stopped training early, if any.
        metrics (`dict`): what was written to `metrics.json`.
    """

    run_dir: Path
    checkpoint: Path | None
    interrupted: str | None
    metrics: dict[str, Any]


def load_users(cfg: CloneusConfig, chatlog: str | Path | None) -> UserIndex:
    """The user index at `dataset.users_json`, or one built from the chat when that file does not exist (or is
    the old scripts/build.py layout, which has no counts)."""
    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat
    from cloneus.data.users import UserIndex

    path = Path(cfg.dataset.users_json)
    existing = UserIndex.load(path) if path.is_file() else None
    if existing is not None and not existing.needs_counts:
        return existing
    source = chatlog or cfg.dataset.chatlog
    if source is None:
        raise CloneusError("dataset.chatlog is not set; pass -d FILE or set dataset.chatlog in the config")
    if existing is None:
        logger.info("no user index at %s; building one from %s (edit it with `python -m cloneus index`)", path, source)
    cleaned = clean_messages(
        read_chat(source, date_format=cfg.dataset.date_format), cfg.dataset.cleaning, cfg.dataset.merge_window_minutes
    )
    return UserIndex.build(cleaned.frame, min_share=cfg.dataset.min_share, existing=existing)


def use_bf16(precision: str) -> bool:
    """`auto` means bf16 on a GPU that has it; CPUs train faster (and as exactly) in fp32."""
    import torch

    if precision == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def training_arguments(cfg: CloneusConfig, output_dir: Path, *, has_eval: bool) -> TrainingArguments:
    """Map the `training` section onto `transformers.TrainingArguments`."""
    from transformers import TrainingArguments

    return TrainingArguments(**training_argument_values(cfg, output_dir, has_eval=has_eval))


def training_argument_values(cfg: CloneusConfig, output_dir: Path, *, has_eval: bool) -> dict[str, Any]:
    """The `TrainingArguments` keywords for the `training` section; TRL's configs (feedback tuning) take them too."""
    import torch

    t = cfg.training
    eval_steps = t.eval_steps or t.save_steps
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup if t.warmup < 1 else int(t.warmup),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        activation_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
        data_seed=t.seed,
        bf16=use_bf16(t.precision),
        fp16=t.precision == "fp16",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps,
        report_to=list(t.report_to) or "none",
        include_num_input_tokens_seen="all",
        remove_unused_columns=False,
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
    )


def check_report_to(report_to: list[str]) -> None:
    """Each `training.report_to` integration must be installed; the Trainer would fail only after loading.

    Raises:
        ConfigError: naming the integration and how to install it or turn it off.
    """
    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(
                f"training.report_to: {name!r} is not installed; `pip install {name}` or remove it from the list"
            )


def check_warmup(cfg: CloneusConfig, train_rows: int, world_size: int) -> None:
    """A warmup given in steps must fit in the run; with `max_steps` unset the run's length is known only now.

    Counts steps the way the Trainer does: batches per epoch, divided by gradient accumulation, times epochs.

    Raises:
        ConfigError: naming training.warmup and the run's length.
    """
    t = cfg.training
    if t.warmup < 1 or t.max_steps is not None:
        return
    batches = math.ceil(train_rows / (t.batch_size * world_size))
    total = math.ceil(t.num_epochs * max(batches // t.gradient_accumulation_steps, 1))
    if t.warmup > total:
        raise ConfigError(
            f"training.warmup is {t.warmup:g} steps, longer than the run ({total} steps: {train_rows} rows, "
            f"training.num_epochs={t.num_epochs:g}); lower it, or give a fraction of the run (< 1)"
        )


def distributed_state():
    """accelerate's process state; without CUDA it must be told so, or ranks under a launcher train alone.

    With `cpu=True` and a launcher's WORLD_SIZE > 1, accelerate joins the ranks with gloo (CPU DDP).
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _agree_on_run_name(run_name: str | None) -> str:
    """Every rank must write to the same directory; the main process picks the timestamped default."""
    from accelerate.utils import broadcast_object_list

    from cloneus.training.rundir import default_run_name

    state = distributed_state()
    names = [run_name or default_run_name()]
    if state.num_processes > 1:
        broadcast_object_list(names, from_process=0)
    return names[0]


def _prepare_model(cfg: CloneusConfig, tokenizer, tokens_added: list[str]):
    """Base model with LoRA attached; new special tokens get embedding rows and train just those rows."""
    from cloneus.models.loading import load_model, pick_device, resolve_model, uses_unsloth
    from cloneus.models.lora import attach_lora

    device = pick_device()
    model, _ = load_model(cfg.model, device=device, for_training=True, max_seq_length=cfg.training.chunk_size)
    lora_cfg = cfg.lora
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        logger.info("resizing embeddings to %d for added tokens %s", len(tokenizer), tokens_added)
        model.resize_token_embeddings(len(tokenizer))
    peft_model = attach_lora(
        model,
        lora_cfg,
        use_unsloth=uses_unsloth(cfg.model, device),
        gradient_checkpointing=cfg.training.gradient_checkpointing,
        trainable_token_ids=tokenizer.convert_tokens_to_ids(tokens_added) if tokens_added else None,
    )
    # peft reads the base model's config.json from here when saving (to spot a resized vocabulary); an id such as
    # builtin:smollm2-135m is neither a directory nor a hub repo, so name the local directory actually loaded.
    # cloneus_config.yaml in each checkpoint keeps model.model_id as the user wrote it.
    peft_model.peft_config["default"].base_model_name_or_path = str(resolve_model(cfg.model.model_id).path)
    if cfg.training.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    return peft_model


def _final_eval_loss(trainer) -> float:
    """The eval loss at the last step: the Trainer already evaluates there with step-based eval, else run it."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry["step"] == trainer.state.global_step:
                return entry["eval_loss"]
            break
    return trainer.evaluate()["eval_loss"]


def _final_metrics(trainer, train_output, started: float, eval_loss: float | None) -> dict[str, Any]:
    state = trainer.state
    runtime = train_output.metrics.get("train_runtime")
    metrics: dict[str, Any] = {
        "steps": state.global_step,
        "epochs": state.epoch,
        "train_loss": train_output.training_loss,
        "train_tokens": state.num_input_tokens_seen,
        "train_runtime_s": runtime,
        "tokens_per_s": state.num_input_tokens_seen / runtime if runtime else None,
        "wall_s": time.monotonic() - started,
    }
    if eval_loss is not None:
        metrics["eval_loss"] = eval_loss
        metrics["eval_perplexity"] = math.exp(min(eval_loss, 50.0))
    return metrics


def train(
    cfg: CloneusConfig,
    *,
    chatlog: str | Path | None = None,
    run_name: str | None = None,
    resume: str | Path | None = None,
    progress_file: str | Path | None = None,
    users: UserIndex | None = None,
) -> TrainResult:
    """Train LoRA adapters on a chat export and write the run directory.

    Args:
        cfg (`CloneusConfig`): the whole config; `prompt.name_mapping` is filled from the user index when empty.
        chatlog (`str | Path`, *optional*): overrides `dataset.chatlog`.
        run_name (`str`, *optional*): defaults to a UTC timestamp; ignored when resuming.
        resume (`str | Path`, *optional*): a `checkpoint-N` directory to continue from, in its own run directory.
        progress_file (`str | Path`, *optional*): an extra copy of `progress.jsonl` (the bot's job runner).
        users (`UserIndex`, *optional*): defaults to `dataset.users_json`, built from the chat when missing.

    Raises:
        CloneusError: bad config, data or checkpoint; the message says which.
    """
    from cloneus.library_bars import library_bars_off

    state = distributed_state()
    # Errors go to the bot's --progress-file even before the run directory is known.
    progress = ProgressLog([Path(progress_file)] if progress_file else [])
    run = None
    try:
        with library_bars_off():
            run, cfg, users = _start_run(
                cfg, state, progress, chatlog=chatlog, run_name=run_name, resume=resume, users=users
            )
            return _run(cfg, state, progress, run, users, resume)
    except KeyboardInterrupt:
        if state.is_main_process:
            last = run.checkpoints() if run is not None else []
            progress.write("interrupted", checkpoint=str(last[-1]) if last else None, signal="SIGINT")
        raise
    except Exception as e:
        if state.is_main_process:
            progress.write("error", message=f"{type(e).__name__}: {e}")
        if run is not None:
            e.add_note(f"run directory: {run.path}")
        raise


def _start_run(cfg: CloneusConfig, state, progress: ProgressLog, *, chatlog, run_name, resume, users):
    """Pick the run directory, resolve the config and write config.yaml + users.json."""
    from cloneus.data.preflight import check_trainable_users
    from cloneus.models.loading import resolve_model

    if resume is not None:
        run = RunDir.of_checkpoint(resume)
        logger.info("resuming %s from step %d", run.path, checkpoint_step(resume))
    else:
        run = RunDir.for_new_run(cfg, resolve_model(cfg.model.model_id).alias, _agree_on_run_name(run_name))
    progress.paths.insert(0, run.progress_path)
    check_report_to(cfg.training.report_to)
    users = users if users is not None else load_users(cfg, chatlog)
    index_file = Path(cfg.dataset.users_json)
    source = str(index_file) if index_file.is_file() else f"the user index built from {chatlog or cfg.dataset.chatlog}"
    check_trainable_users(users, source)
    # The config written to the run and every checkpoint is fully resolved: it names the chat and the participants.
    cfg = cfg.model_copy(deep=True)
    if chatlog is not None:
        cfg.dataset.chatlog = str(chatlog)
    if cfg.prompt.name_mapping is None:
        cfg.prompt.name_mapping = users.name_mapping(cfg.format.author_tag)
    if state.is_main_process:
        run.remove_staging()
        run.write_start(cfg, users)
    logger.info("run directory: %s", run.path)
    return run, cfg, users


def _datasets(cfg: CloneusConfig, tokenizer, users: UserIndex, state):
    """Tokenized train/eval sets (packed when `training.packing`) and the tokens the formatter added."""
    from cloneus.data.dataset import prepare_dataset
    from cloneus.training.packing import pack_dataset

    with state.main_process_first():
        data = prepare_dataset(cfg, tokenizer, users=users)
    long = data.stats.get("long_messages", {})
    if any(long.values()):
        logger.warning(
            "%d messages longer than training.chunk_size=%d were %s (dataset.long_messages: %s); "
            "`python -m cloneus prepare` shows the counts",
            sum(long.values()),
            cfg.training.chunk_size,
            "truncated" if cfg.dataset.long_messages == "truncate" else "left out",
            cfg.dataset.long_messages,
        )
    eval_set = data.eval
    limit = cfg.training.eval_max_conversations
    if eval_set is not None and limit is not None and len(eval_set) > limit:
        logger.info("in-training eval scores the first %d of %d held-out conversations", limit, len(eval_set))
        eval_set = eval_set.select(range(limit))
    if not cfg.training.packing:
        return data.train, eval_set, data.tokens_added
    eval_set = pack_dataset(eval_set, cfg.training.chunk_size) if eval_set is not None else None
    return pack_dataset(data.train, cfg.training.chunk_size), eval_set, data.tokens_added


def _run(cfg: CloneusConfig, state, progress: ProgressLog, run: RunDir, users: UserIndex, resume) -> TrainResult:
    """Datasets, model and Trainer for a started run; writes metrics, the loss plot and the final event."""
    from cloneus.models.loading import load_tokenizer
    from cloneus.training.callbacks import ProgressCallback, StopOnSignalCallback
    from cloneus.training.checkpoints import CloneusTrainer
    from cloneus.training.console import use_console
    from cloneus.training.packing import PaddingFreeCollator

    started = time.monotonic()
    tokenizer = load_tokenizer(cfg.model)
    train_set, eval_set, tokens_added = _datasets(cfg, tokenizer, users, state)
    check_warmup(cfg, len(train_set), state.num_processes)
    stopper = StopOnSignalCallback()
    trainer = CloneusTrainer(
        checkpoint_files=functools.partial(run.write_checkpoint_extras, cfg=cfg, users=users),
        model=_prepare_model(cfg, tokenizer, tokens_added),
        args=training_arguments(cfg, run.path, has_eval=eval_set is not None),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=PaddingFreeCollator(),
        processing_class=tokenizer,
        callbacks=[ProgressCallback(progress, run), stopper],
    )
    use_console(trainer)
    with stopper:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    eval_loss = _final_eval_loss(trainer) if eval_set is not None and not stopper.received else None

    checkpoints = run.checkpoints()
    checkpoint = str(checkpoints[-1]) if checkpoints else None
    metrics = _final_metrics(trainer, output, started, eval_loss)
    if state.is_main_process:
        run.write_metrics(metrics)
        run.write_loss_plot(trainer.state.log_history)
        if stopper.received:
            progress.write("interrupted", checkpoint=checkpoint, signal=stopper.received)
        else:
            progress.write("done", checkpoint=checkpoint, metrics=metrics)
    return TrainResult(run.path, checkpoints[-1] if checkpoints else None, stopper.received, metrics)
