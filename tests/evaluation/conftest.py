"""Fixtures for eval tests: the tiny model trained a few steps on a synthetic chat whose members write differently.

The held-out split is the latest sessions; one late message carries HTML so the report's escaping is exercised.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.training.conftest import tiny_config

STYLES = {
    "alice": ["LOL that is SO GOOD", "OMG YES!!!", "WHAT no way", "HAHA i LOVE it"],
    "bob": ["did you try rebooting it?", "which kernel are you on?", "is the disk full?", "what does dmesg say?"],
    "carol": ["see https://example.org/docs", "docs are at https://example.org/faq", "https://example.org/bug 42"],
}
HTML_LINE = "<script>alert('x')</script> & <b>bold</b>"


def write_styled_chat(path: Path, sessions: int = 14, per_session: int = 9) -> Path:
    """Sessions eight hours apart; authors rotate, each writing in their own style (plus a counter)."""
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    names = list(STYLES)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["username", "text", "timestamp"])
        for s in range(sessions):
            for m in range(per_session):
                author = names[(s + m) % 3] if m % 4 else names[0]
                lines = STYLES[author]
                text = HTML_LINE if (s, m) == (sessions - 1, 2) else f"{lines[(s + m) % len(lines)]} {s}{m}"
                out.writerow([author, text, (start + timedelta(hours=8 * s, minutes=10 * m)).isoformat()])
    return path


@pytest.fixture(scope="session")
def styled_chat(tmp_path_factory) -> Path:
    return write_styled_chat(tmp_path_factory.mktemp("styled") / "chat.csv")


@pytest.fixture(scope="session")
def checkpoint(tiny_model_dir, styled_chat, tmp_path_factory) -> Path:
    from cloneus.training.trainer import train

    root = tmp_path_factory.mktemp("eval-run")
    cfg = tiny_config(tiny_model_dir, root, max_steps=2, save_steps=2)
    return train(cfg, chatlog=styled_chat, run_name="e").checkpoint
