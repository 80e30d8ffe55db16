"""`python -m cloneus demo` (`make demo`): clean output, and it ends by saying what to try next."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cloneus.training.demo import next_steps

REPO = Path(__file__).resolve().parents[2]
RAW_DICT = re.compile(r"\{'(loss|eval_loss|train_runtime|grad_norm)'")
PY_WARNING = re.compile(r"\b\w*Warning\b|warnings\.warn")


def test_next_steps_name_chat_eval_and_the_bot():
    text = "\n".join(next_steps(Path("runs/x/checkpoint-30")))
    assert "python -m cloneus chat runs/x/checkpoint-30" in text
    assert "python -m cloneus eval runs/x/checkpoint-30" in text
    assert "Discord bot" in text and "config migrate" in text


def test_every_suggested_command_parses():
    """A suggestion whose flags the CLI no longer has (eval's old `--base`) would fail the user's first try."""
    from cloneus.cli import build_parser

    text = "\n".join(next_steps(Path("runs/x/checkpoint-30")))
    commands = re.findall(r"python -m cloneus ([^`(;\n]+?)(?=\s{2,}|\s\(|`|$)", text, flags=re.MULTILINE)
    assert [c.split()[0] for c in commands] == ["chat", "eval", "train", "config"]
    for command in commands:
        build_parser().parse_args(command.split())


@pytest.mark.slow
def test_demo_output_has_no_warning_and_no_raw_dict(tmp_path):
    """The real demo with the builtin model, shortened by its own flags; runs and caches land in tmp_path."""
    env = {**os.environ, "CLONEUS_MODEL_CACHE": str(REPO / "data" / "models")}
    proc = subprocess.run(
        [sys.executable, "-m", "cloneus", "demo", "--steps", "2", "--turns", "1", "--run-name", "clean"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not PY_WARNING.search(out), out
    assert not RAW_DICT.search(out), out
    assert "%|" not in out, out  # no library progress bars off a terminal
    assert "eval at step 2: loss" in out and "checkpoint saved:" in out
    tail = proc.stdout.strip().splitlines()[-5:]
    assert tail[0] == "What to try next:"
    assert "cloneus chat" in tail[1] and "cloneus eval" in tail[2] and "Discord bot" in tail[3]
