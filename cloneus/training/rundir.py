"""The run directory: everything one training run leaves behind, laid out so each piece is usable alone.

```
runs/<model-alias>/<run-name>/
  config.yaml  users.json          written when training starts
  progress.jsonl                   one JSON object per event (start, log, eval, checkpoint, done, ...)
  metrics.json  loss.png           written at the end
  checkpoint-<step>/               adapter + tokenizer + cloneus_config.yaml + users.json
  .tmp-checkpoint-<step>/          a save in progress (`checkpoints.py`); removed when the run starts again
```

A checkpoint carries its own config and user index, so `Cloneus.from_pretrained(checkpoint)` needs nothing else,
and copying one checkpoint directory to another machine is enough to serve it. A `checkpoint-<step>` without those
files (left by a kill during a save in an older version) is incomplete: every reader skips it, with a warning.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError
from cloneus.io import TMP_PREFIX, atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from cloneus.config import CloneusConfig
    from cloneus.data.users import UserIndex

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINT_CONFIG = "cloneus_config.yaml"
USERS_FILE = "users.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TRAINER_STATE = "trainer_state.json"


def default_run_name() -> str:
    """A sortable UTC timestamp, e.g. `20260128-141502`."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def checkpoint_step(path: str | Path) -> int:
    """The N of a `checkpoint-N` directory.

    Raises:
        CloneusError: the path is not named `checkpoint-<step>`.
    """
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    if not match:
        raise CloneusError(f"{path}: expected a directory named checkpoint-<step>")
    return int(match.group(1))


def checkpoint_problem(path: str | Path, *, for_resume: bool = False) -> str | None:
    """Why `path` is not a complete checkpoint (the first missing file), or None when it is one.

    Args:
        path (`str | Path`): a `checkpoint-<step>` directory.
        for_resume (`bool`, *optional*, defaults to `False`): also require the Trainer's state, which serving
            does not need (a copied or exported checkpoint may leave it out).
    """
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        return f"no {ADAPTER_WEIGHTS[0]}"
    required = (ADAPTER_CONFIG, CHECKPOINT_CONFIG, USERS_FILE) + ((TRAINER_STATE,) if for_resume else ())
    missing = next((name for name in required if not (path / name).is_file()), None)
    return f"no {missing}" if missing else None


def complete_checkpoints(run_path: str | Path) -> list[Path]:
    """The complete `checkpoint-<step>` directories of a run, oldest step first; incomplete ones are logged."""
    found = [p for p in Path(run_path).glob("checkpoint-*") if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    complete = []
    for path in sorted(found, key=checkpoint_step):
        problem = checkpoint_problem(path)
        if problem is None:
            complete.append(path)
        else:
            logger.warning("skipping incomplete checkpoint %s (%s; a save was interrupted)", path, problem)
    return complete


@dataclass
class ProgressLog:
    """Appends JSON lines to the run's `progress.jsonl` and to any extra copies (`--progress-file`).

    Each event is one `write` of one line, so a reader polling the file sees whole lines only, except possibly a
    last line still being written, which it should skip.
    """

    paths: list[Path]

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": datetime.now(timezone.utc).isoformat(), **fields}) + "\n"
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()


@dataclass(frozen=True)
class RunDir:
    """Paths and writers of one run directory."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def users_path(self) -> Path:
        return self.path / USERS_FILE

    @property
    def progress_path(self) -> Path:
        return self.path / "progress.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def loss_plot_path(self) -> Path:
        return self.path / "loss.png"

    @classmethod
    def for_new_run(cls, cfg: CloneusConfig, alias: str, run_name: str | None = None) -> RunDir:
        """`<output_root>/<alias>/<run_name>`; refuses a name that already holds a run, so nothing is overwritten.

        Raises:
            CloneusError: the directory already has a `config.yaml`.
        """
        path = Path(cfg.training.output_root) / alias / (run_name or default_run_name())
        run = cls(path)
        if run.config_path.exists():
            raise CloneusError(
                f"{path} already holds a run; pick another --run-name or continue it with --resume {path}/checkpoint-N"
            )
        return run

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir:
        """The run a `checkpoint-N` directory belongs to (for `--resume`).

        Raises:
            CloneusError: the directory is missing or incomplete; the message names the newest complete one.
        """
        checkpoint = Path(checkpoint)
        checkpoint_step(checkpoint)
        if not checkpoint.is_dir():
            raise CloneusError(f"{checkpoint}: no such checkpoint directory")
        problem = checkpoint_problem(checkpoint, for_resume=True)
        if problem is not None:
            usable = [
                p for p in complete_checkpoints(checkpoint.parent) if checkpoint_problem(p, for_resume=True) is None
            ]
            hint = f"resume from {usable[-1]} instead" if usable else "the run has no complete checkpoint to resume"
            raise CloneusError(f"{checkpoint}: incomplete checkpoint ({problem}; its save was interrupted); {hint}")
        return cls(checkpoint.parent)

    def checkpoints(self) -> list[Path]:
        """Complete `checkpoint-N` directories, oldest step first."""
        return complete_checkpoints(self.path)

    def remove_staging(self) -> None:
        """Delete `.tmp-*` folders left by a save that was killed; only one process trains a run at a time."""
        for leftover in self.path.glob(f"{TMP_PREFIX}*"):
            if leftover.is_dir():
                logger.info("removing %s, left by an interrupted checkpoint save", leftover)
                shutil.rmtree(leftover)

    def write_start(self, cfg: CloneusConfig, users: UserIndex) -> None:
        """Resolved config and user index, written before any training so a crash still documents the run."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, cfg.to_yaml())
        users.save(self.users_path)

    def write_checkpoint_extras(self, checkpoint: Path, cfg: CloneusConfig, users: UserIndex) -> None:
        """Make `checkpoint` self-contained: the config and user index it was trained with."""
        atomic_write_text(checkpoint / CHECKPOINT_CONFIG, cfg.to_yaml())
        users.save(checkpoint / USERS_FILE)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.metrics_path, metrics)

    def write_loss_plot(self, log_history: list[dict[str, Any]]) -> None:
        """Train and eval loss against step, from the Trainer's `state.log_history`."""
        from matplotlib.figure import Figure

        train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and math.isfinite(e["loss"])]
        evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        for points, label, style in ((train, "train", "-"), (evals, "eval", "o--")):
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(str(self.path))
        ax.grid(alpha=0.3)
        if train or evals:
            ax.legend()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write_bytes(self.loss_plot_path, buf.getvalue())
