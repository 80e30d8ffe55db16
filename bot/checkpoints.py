"""Every checkpoint under the runs directory, with its eval figures when `/admin eval` wrote them, for admins to
browse (`/model list all:true`) and register (`/model register`).

`eval.json` beside a checkpoint is the evaluation suite's report (`cloneus.evaluation.suite`); it is read by key
and defensively, since a run may predate the suite or the file may be half-written by another version: anything
unreadable is shown as "no eval", never an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloneus.errors import CloneusError
from cloneus.training.rundir import CHECKPOINT_PATTERN

logger = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
DEFAULT_RUNS_ROOT = Path("runs")


@dataclass(frozen=True)
class FoundCheckpoint:
    """A checkpoint directory and the `summary` of its eval.json (None when absent or unreadable)."""

    path: Path
    eval: dict[str, Any] | None


def runs_root(config_path: Path) -> Path:
    """Where training writes runs: `training.output_root` of the training config, else `runs/`."""
    from cloneus.config import load_config

    if not config_path.is_file():
        return DEFAULT_RUNS_ROOT
    try:
        return Path(load_config(config_path).training.output_root)
    except CloneusError as e:
        logger.warning("%s unreadable (%s); browsing %s", config_path, e, DEFAULT_RUNS_ROOT)
        return DEFAULT_RUNS_ROOT


def read_eval(checkpoint: Path) -> dict[str, Any] | None:
    """The `summary` mapping of `checkpoint/eval.json`, or None."""
    file = checkpoint / EVAL_FILE
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    summary = report.get("summary") if isinstance(report, dict) else None
    return summary if isinstance(summary, dict) else None


def find_checkpoints(root: Path) -> list[FoundCheckpoint]:
    """Every `checkpoint-<step>` directory under `root` (any depth), sorted by path."""
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("checkpoint-*") if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return [FoundCheckpoint(path=p, eval=read_eval(p)) for p in sorted(found)]


def checkpoint_under(root: Path, raw: str) -> Path:
    """`raw` (relative to the working directory, or to `root`) as a checkpoint directory inside `root`.

    Raises:
        `CloneusError`: outside `root` (the bot opens no other files), missing, or not a checkpoint directory.
    """
    root = root.resolve()
    for candidate in (Path(raw).expanduser(), root / raw):
        path = candidate.resolve()
        if path.is_dir():
            break
    else:
        raise CloneusError(f"ckpt={raw!r}: no such directory (paths are relative to the bot, or to {root})")
    if not path.is_relative_to(root):
        raise CloneusError(f"ckpt={raw!r}: only checkpoints under {root} can be registered from Discord")
    if not CHECKPOINT_PATTERN.match(path.name):
        raise CloneusError(f"ckpt={raw!r}: expected a checkpoint-<step> directory of a run")
    return path
