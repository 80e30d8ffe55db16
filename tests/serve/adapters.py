"""Two small real LoRA adapters for the builtin SmolLM2, trained a few steps each, for the real-server suite.

Run `alpha` trains four steps and keeps checkpoint-2 and checkpoint-4; `beta` trains two steps on a different
chat, so the two served adapters answer differently. Training is skipped when the checkpoints already exist
(a second `make test-serve` reuses them).
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

BUILTIN = "builtin:smollm2-135m"
AUTHORS = ["alice", "bob", "carol"]
CHATS = {
    "alpha": ["pizza on friday?", "count me in", "did anyone watch the game", "no, I was debugging all night"],
    "beta": ["the build is red again", "who touched the makefile", "rebase and try again", "works on my machine"],
}


def _write_chat(path: Path, lines: list[str], sessions: int = 10, per_session: int = 8) -> Path:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["username", "text", "timestamp"])
        for s in range(sessions):
            for m in range(per_session):
                when = start + timedelta(hours=8 * s, minutes=5 * m)
                out.writerow([AUTHORS[(s + m) % 3], f"{lines[(s * 3 + m) % len(lines)]} ({s}.{m})", when.isoformat()])
    return path


def _config(name: str, root: Path, max_steps: int, save_steps: int):
    from cloneus.config import config_from_dict

    return config_from_dict(
        {
            "model": {"model_id": BUILTIN, "quant_method": "fp32"},
            "lora": {"r": 8, "alpha": 16},
            "training": {
                "chunk_size": 128,
                "batch_size": 1,
                "gradient_accumulation_steps": 1,
                "max_steps": max_steps,
                "save_steps": save_steps,
                "logging_steps": 1,
                "learning_rate": 2e-3,
                "output_root": str(root / "runs"),
            },
            "dataset": {
                "users_json": str(root / f"{name}-users.json"),
                "cache_dir": str(root / "cache"),
                "eval_frac": 0.0,
                "min_session_length": 2,
            },
        }
    )


def build_adapters(root: Path) -> dict[str, Path]:
    """Checkpoints by served name: `alpha` (4 steps), `beta` (2 steps), `alpha-early` (alpha's step 2)."""
    from cloneus.inference.checkpoint import find_checkpoint
    from cloneus.training.trainer import train

    root.mkdir(parents=True, exist_ok=True)
    plans = {"alpha": (4, 2), "beta": (2, 2)}
    found: dict[str, Path] = {}
    for name, (steps, save) in plans.items():
        run_dir = root / "runs" / "smollm2-135m" / name
        if not (run_dir / f"checkpoint-{steps}" / "adapter_config.json").is_file():
            chat = _write_chat(root / f"{name}.csv", CHATS[name])
            train(_config(name, root, steps, save), chatlog=chat, run_name=name)
        found[name] = find_checkpoint(run_dir)
    found["alpha-early"] = root / "runs" / "smollm2-135m" / "alpha" / "checkpoint-2"
    return found


if __name__ == "__main__":
    for served, path in build_adapters(Path(sys.argv[1])).items():
        print(f"{served}={path}")
