"""What a training run shows in the terminal: one progress bar, one line per eval and per checkpoint.

The Trainer's own console output (a `str(dict)` per log, its tqdm bars) is replaced by `ConsoleCallback`: a tqdm
bar with step/total, loss, learning rate, tokens/s and the ETA when stderr is a terminal, else one log line per
`logging_steps` (logs and CI have no use for carriage returns). With `-v` (DEBUG logging) the Trainer's own
output stays as it is.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import TYPE_CHECKING

from transformers import TrainerCallback

from cloneus.library_bars import verbose

if TYPE_CHECKING:
    from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)


def use_console(trainer: Trainer) -> None:
    """Replace the Trainer's printing callbacks with `ConsoleCallback` (unless `-v`)."""
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as TrainerProgressCallback

    if verbose():
        return
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(TrainerProgressCallback)
    trainer.add_callback(ConsoleCallback())


def _duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on (tqdm's ETA format)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ConsoleCallback(TrainerCallback):
    """The run's terminal output on the main process: a bar (or a line per log), and a line per eval/checkpoint.

    Args:
        stream (*optional*, defaults to `sys.stderr`): where the bar goes; a bar is drawn only on a terminal.
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.start_time = 0.0
        self.start_step = 0
        self.start_tokens = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if not state.is_world_process_zero:
            return
        self.start_time = time.monotonic()
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="training", unit="step", file=self.stream
            )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def _rates(self, state: TrainerState) -> tuple[float | None, float | None]:
        """Tokens per second and seconds left, measured over this session's steps."""
        elapsed = time.monotonic() - self.start_time
        done = state.global_step - self.start_step
        if elapsed <= 0 or done <= 0:
            return None, None
        return (state.num_input_tokens_seen - self.start_tokens) / elapsed, elapsed / done * (
            state.max_steps - state.global_step
        )

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "eval_loss" in logs:
            loss = logs["eval_loss"]
            self._line(f"eval at step {state.global_step}: loss {loss:.4f} (perplexity {math.exp(min(loss, 50)):.1f})")
        if "loss" not in logs:
            return
        tokens_per_s, eta = self._rates(state)
        lr = logs.get("learning_rate")
        fields = {"loss": f"{logs['loss']:.4f}", "lr": f"{lr:.2e}" if lr is not None else "-"}
        fields["tok/s"] = f"{tokens_per_s:.0f}" if tokens_per_s is not None else "-"
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=True)
            return
        parts = "  ".join(f"{k} {v}" for k, v in fields.items())
        eta_text = f"  ETA {_duration(eta)}" if eta is not None else ""
        self._line(f"step {state.global_step}/{state.max_steps}  {parts}{eta_text}")

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero:
            self._line(f"checkpoint saved: {args.output_dir}/checkpoint-{state.global_step}")

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, text: str) -> None:
        """A line above the bar (the bar redraws below it), or a log line without one."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            logger.info(text)
