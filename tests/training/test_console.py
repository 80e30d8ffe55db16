"""What a training run prints: a bar or a line per log, a line per eval and checkpoint, no raw dicts or warnings."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from cloneus.cli import main
from cloneus.training.console import ConsoleCallback

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
RAW_DICT = re.compile(r"\{'(loss|eval_loss|train_runtime)'")
PY_WARNING = re.compile(r"\b\w*Warning\b|warnings\.warn")


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal, so the callback draws its bar into it."""

    def isatty(self) -> bool:
        return True


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cloneus", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_training_output_is_readable(tiny_model_dir, chat_csv, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(tiny_config(tiny_model_dir, tmp_path, max_steps=4, save_steps=2, logging_steps=1).to_yaml())
    proc = run_cli(["train", "-c", str(cfg), "-d", str(chat_csv), "--run-name", "quiet"], REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not RAW_DICT.search(out), out
    assert not PY_WARNING.search(out), out
    assert "%|" not in out  # no library progress bars (weights, shards, dataset cache) off a terminal
    assert [int(n) for n in re.findall(r"step (\d)/4  loss [\d.]+  lr \S+  tok/s \d+", out)] == [1, 2, 3, 4]
    assert re.findall(r"eval at step (\d): loss [\d.]+ \(perplexity [\d.]+\)", out) == ["2", "4"]
    assert len(re.findall(r"checkpoint saved: \S+/quiet/checkpoint-\d", out)) == 2


@pytest.mark.slow
def test_verbose_keeps_the_trainer_output(tiny_model_dir, chat_csv, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(tiny_config(tiny_model_dir, tmp_path, max_steps=2, save_steps=2, logging_steps=1).to_yaml())
    proc = run_cli(["-v", "train", "-c", str(cfg), "-d", str(chat_csv), "--run-name", "loud"], REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert RAW_DICT.search(proc.stdout + proc.stderr)


def test_a_failed_run_prints_one_line_with_cause_and_run_directory(tiny_model_dir, chat_csv, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(tiny_config(tiny_model_dir, tmp_path, chunk_size=8).to_yaml())
    assert main(["train", "-c", str(cfg), "-d", str(chat_csv), "--run-name", "broken"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("training failed: the system prompt alone is")
    assert lines[0].endswith(f"(run directory: {tmp_path / 'runs' / tiny_model_dir.name / 'broken'})")


class TestConsoleCallback:
    def _state(self, step: int) -> TrainerState:
        state = TrainerState(max_steps=10, global_step=step, num_input_tokens_seen=100 * step)
        return state

    def test_draws_one_bar_with_loss_lr_and_tokens_per_second(self, tmp_path):
        stream = FakeTerminal()
        console, args, control = ConsoleCallback(stream), TrainingArguments(output_dir=str(tmp_path)), TrainerControl()
        console.on_train_begin(args, self._state(0), control)
        for step in (1, 2):
            console.on_step_end(args, self._state(step), control)
            console.on_log(args, self._state(step), control, logs={"loss": 3.5 - step, "learning_rate": 1e-3})
        console.on_log(args, self._state(2), control, logs={"eval_loss": 2.0})
        console.on_save(args, self._state(2), control)
        console.on_train_end(args, self._state(2), control)
        text = stream.getvalue()
        assert "2/10" in text and "loss=1.5000" in text and "lr=1.00e-03" in text and "tok/s=" in text
        assert "eval at step 2: loss 2.0000 (perplexity 7.4)" in text
        assert f"checkpoint saved: {tmp_path}/checkpoint-2" in text
        assert text.count("training:") >= 1 and console.bar is None

    def test_without_a_terminal_logs_a_line_per_log(self, tmp_path, caplog):
        console, args, control = ConsoleCallback(io.StringIO()), TrainingArguments(output_dir=str(tmp_path)), None
        caplog.set_level("INFO", logger="cloneus.training.console")
        console.on_train_begin(args, self._state(0), control)
        console.on_log(args, self._state(5), control, logs={"loss": 1.25, "learning_rate": 2e-4})
        assert console.bar is None
        assert re.search(r"step 5/10  loss 1.2500  lr 2.00e-04  tok/s \d+  ETA \d+:\d\d", caplog.text)
