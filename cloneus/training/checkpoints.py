"""Checkpoints that appear complete or not at all.

The Trainer writes a checkpoint file by file (adapter, tokenizer, optimizer, RNG and trainer state) straight into
`checkpoint-N/`, and our config and user index were added after it, so a SIGKILL or an out-of-memory kill during a
save left the newest checkpoint half written, and every reader picked it. `StagedCheckpoints` makes the Trainer
write into `<run>/.tmp-checkpoint-N/checkpoint-N/`, adds our files there, and only then renames the folder into
place; a rename is atomic on POSIX, so `checkpoint-N/` is either absent or whole. Older checkpoints are rotated
out (`save_total_limit`) only after the new one is in place, so a kill never leaves fewer complete checkpoints.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import Trainer

from cloneus.io import TMP_PREFIX


def publish_checkpoint(staged: Path, target: Path) -> None:
    """Rename the finished `staged` folder to `target`, replacing an older save of the same step.

    A folder cannot be renamed over a non-empty one, so an existing `target` (a re-save after resuming from an
    earlier step) is first moved to a `.tmp-` name; at every moment `target` is absent, the old or the new save.
    """
    old = target.parent / f"{TMP_PREFIX}old-{target.name}"
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)


class StagedCheckpoints:
    """Mixin for `transformers.Trainer` and its subclasses (TRL's included): checkpoints are staged, then renamed.

    Put it first in the bases, e.g. `class FeedbackTrainer(StagedCheckpoints, KTOTrainer)`. The Trainer's
    best-checkpoint bookkeeping (`load_best_model_at_end`) looks for checkpoints in the staging folder, so it is not
    supported; no CloneUs run uses it.

    Args:
        checkpoint_files (`Callable[[Path], None]`): writes our own files (config, user index) into a staged
            checkpoint folder, after the Trainer's files and before the rename.
    """

    def __init__(self, *args: Any, checkpoint_files: Callable[[Path], None], **kwargs: Any):
        self._checkpoint_files = checkpoint_files
        self._staging_root: Path | None = None
        super().__init__(*args, **kwargs)

    def _get_output_dir(self, trial: Any) -> str:
        """While a save runs, the Trainer's run directory is the staging folder, so its files all land there."""
        if self._staging_root is not None:
            return str(self._staging_root)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = Path(self._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        staging_root = run_dir / f"{TMP_PREFIX}{name}"
        self._staging_root = staging_root
        try:
            # Rotation inside the staging folder sees only this checkpoint, so it deletes nothing there.
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        # Every rank writes its own RNG state into the staging folder; rename only once all have.
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return
        staged = staging_root / name
        self._checkpoint_files(staged)
        publish_checkpoint(staged, run_dir / name)
        shutil.rmtree(staging_root)
        rotate_checkpoints(
            output_dir=str(run_dir),
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=True,
        )


class CloneusTrainer(StagedCheckpoints, Trainer):
    """The stock Trainer with staged checkpoints; everything else is the Trainer's own."""
