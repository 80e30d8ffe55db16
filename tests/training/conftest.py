"""Fixtures for training tests: a small synthetic chat and a config that trains the tiny model in seconds."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cloneus.config import config_from_dict

AUTHORS = ["alice", "bob", "carol"]
LINES = [
    "did anyone watch the game last night?",
    "no, I was debugging until 2am",
    "pizza on friday?",
    "count me in",
    "how is everyone doing today",
    "pretty good, just got back from the gym",
]


def write_chat(path: Path, sessions: int = 12, per_session: int = 10) -> Path:
    """A generic CSV chat: `sessions` bursts of messages, eight hours apart, authors in a rotating order."""
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["username", "text", "timestamp"])
        for s in range(sessions):
            for m in range(per_session):
                when = start + timedelta(hours=8 * s, minutes=10 * m)
                author = AUTHORS[(s + m) % 3] if m % 4 else AUTHORS[0]
                out.writerow([author, f"{LINES[(s * 7 + m) % len(LINES)]} ({s}.{m})", when.isoformat()])
    return path


def tiny_config(model_dir: Path, root: Path, **training):
    """Config for the tiny model with everything written under `root`."""
    tree = {
        "model": {"model_id": str(model_dir)},
        "training": {
            "chunk_size": 256,
            "batch_size": 1,
            "gradient_accumulation_steps": 1,
            "max_steps": 4,
            "save_steps": 2,
            "logging_steps": 1,
            "learning_rate": 1e-3,
            "output_root": str(root / "runs"),
            **training,
        },
        "dataset": {
            "users_json": str(root / "users.json"),
            "cache_dir": str(root / "cache"),
            "eval_frac": 0.2,
            "min_session_length": 2,
        },
    }
    return config_from_dict(tree)


@pytest.fixture(scope="session")
def chat_csv(tmp_path_factory) -> Path:
    return write_chat(tmp_path_factory.mktemp("chat") / "chat.csv")
