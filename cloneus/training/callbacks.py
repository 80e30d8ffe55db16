"""Trainer callbacks: progress events and stopping cleanly on SIGINT/SIGTERM.

These are the Trainer's own extension points, so the training loop itself is stock `transformers.Trainer`.
The signal handler only sets a flag; the callback reads it at the end of the current optimizer step and asks
the Trainer to save and stop, so an interrupted run always ends on a complete checkpoint. Under DDP the flag is
all-reduced every step, so every rank stops at the same step even if only one received the signal.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback

from cloneus.training.rundir import ProgressLog, RunDir

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)


class ProgressCallback(TrainerCallback):
    """Writes `start`, `log`, `eval` and `checkpoint` events (contract 8) on the main process.

    A `checkpoint` event is written once the checkpoint is complete: `on_save` runs after the Trainer's save,
    which `checkpoints.StagedCheckpoints` ends with the rename into place.

    Args:
        progress (`ProgressLog`): where the lines go.
        run_dir (`RunDir`): reported in the `start` event.
    """

    def __init__(self, progress: ProgressLog, run_dir: RunDir):
        self.progress = progress
        self.run_dir = run_dir
        self.start_time = 0.0
        self.start_step = 0
        self.start_tokens = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.start_time = time.monotonic()
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen
        if state.is_world_process_zero:
            self.progress.write("start", run_dir=str(self.run_dir.path), total=state.max_steps, step=state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "eval_loss" in logs:
            self.progress.write("eval", step=state.global_step, eval_loss=logs["eval_loss"])
        if "loss" not in logs:
            return
        elapsed = time.monotonic() - self.start_time
        done = state.global_step - self.start_step
        self.progress.write(
            "log",
            step=state.global_step,
            total=state.max_steps,
            epoch=state.epoch,
            loss=logs["loss"],
            learning_rate=logs.get("learning_rate"),
            tokens_per_s=(state.num_input_tokens_seen - self.start_tokens) / elapsed if elapsed > 0 else None,
            elapsed_s=elapsed,
            eta_s=elapsed / done * (state.max_steps - state.global_step) if done > 0 else None,
        )

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.progress.write("checkpoint", step=state.global_step, path=str(checkpoint))


class StopOnSignalCallback(TrainerCallback):
    """Turns SIGINT/SIGTERM into "save a checkpoint and stop" at the end of the current step.

    Use as a context manager around `trainer.train()`; it restores the previous handlers on exit. A second
    signal while the first is pending raises `KeyboardInterrupt` at once, for a user who does not want to wait.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignalCallback:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint after this step, then stopping", self.received)

    def _any_rank_received(self, device) -> bool:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.received is not None
        flag = torch.tensor([1 if self.received else 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.received is None:
            self.received = "SIGTERM (another rank)"
        return bool(flag.item())

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._any_rank_received(args.device):
            control.should_save = True
            control.should_training_stop = True
        return control
