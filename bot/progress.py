"""What a training job's progress file says, folded into one record the bot can show.

The trainer appends JSON lines (contract 8): `start` (`run_dir`, `total`), `log` (`step`, `total`, `epoch`,
`loss`, `learning_rate`, `tokens_per_s`, `elapsed_s`, `eta_s`), `eval` (`step`, `eval_loss`), `checkpoint`
(`step`, `path`), then one of `done` (`checkpoint`, `metrics`), `interrupted` (`checkpoint`) or `error`
(`message`). `read_progress` reads only complete lines after a byte offset, so the file can be tailed while the
trainer writes it; `ProgressState.apply` ignores event kinds it does not know, so the trainer may add more.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BAR_WIDTH = 12
FINAL_EVENTS = ("done", "interrupted", "error")


@dataclass
class ProgressState:
    """Everything the progress file said so far, folded into one record (what the Discord message shows)."""

    step: int = 0
    total: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    run_dir: str | None = None
    last_checkpoint: str | None = None
    final: str | None = None
    final_checkpoint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one progress event into the state (unknown events are ignored, so the trainer may add more)."""
        kind = event.get("event")
        if kind == "start":
            self.run_dir = event.get("run_dir", self.run_dir)
            self.total = event.get("total", self.total)
        elif kind == "log":
            for key in ("step", "total", "epoch", "loss", "tokens_per_s", "eta_s", "elapsed_s"):
                if event.get(key) is not None:
                    setattr(self, key, event[key])
        elif kind == "eval":
            self.eval_loss = event.get("eval_loss", self.eval_loss)
            self.step = max(self.step, event.get("step") or 0)
        elif kind == "checkpoint":
            self.last_checkpoint = event.get("path", self.last_checkpoint)
        elif kind in FINAL_EVENTS:
            self.final = kind
            self.final_checkpoint = event.get("checkpoint") or self.last_checkpoint
            self.metrics = event.get("metrics") or self.metrics
            self.error = event.get("message")

    def render(self) -> str:
        """One line: `[████░░░░] 40/100 · loss 2.31 · eval 2.40 · 812 tok/s · ETA 3m12s`."""
        total = self.total or 0
        filled = round(BAR_WIDTH * min(self.step / total, 1.0)) if total else 0
        parts = [f"[{'█' * filled}{'░' * (BAR_WIDTH - filled)}] {self.step}/{total or '?'}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.2f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.2f}")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.0f} tok/s")
        if self.eta_s is not None and self.final is None:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts)


def format_duration(seconds: float) -> str:
    """`3m12s`, `1h05m`, `42s`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def read_progress(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of `path` after byte `offset`, and the offset after the last complete line.

    A line the trainer is still writing (no newline yet) is left for the next read; a line that is not JSON is
    logged and skipped rather than stopping the watch.
    """
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    events = []
    for n, line in enumerate(chunk[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping a line that is not JSON (line %d after byte %d)", path, n, offset)
    return events, offset + end
