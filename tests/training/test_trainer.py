"""End-to-end training runs on the tiny model: run directory, progress events, checkpoints, resume, interrupt."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cloneus.cli import main
from cloneus.errors import CloneusError
from cloneus.training.callbacks import StopOnSignalCallback
from cloneus.training.trainer import train

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
CONTRACT_FIELDS = {
    "start": {"run_dir", "total"},
    "log": {"step", "total", "epoch", "loss", "learning_rate", "tokens_per_s", "elapsed_s", "eta_s"},
    "eval": {"step", "eval_loss"},
    "checkpoint": {"step", "path"},
    "done": {"checkpoint", "metrics"},
    "interrupted": {"checkpoint"},
}


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, chat_csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    result = train(
        tiny_config(tiny_model_dir, root), chatlog=chat_csv, run_name="r1", progress_file=root / "copy.jsonl"
    )
    return result, root


class TestRunDirectory:
    def test_layout(self, finished_run, tiny_model_dir):
        result, root = finished_run
        run = result.run_dir
        assert run == root / "runs" / tiny_model_dir.name / "r1"
        for name in ("config.yaml", "users.json", "progress.jsonl", "metrics.json", "loss.png"):
            assert (run / name).is_file(), name
        assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
        assert result.checkpoint == run / "checkpoint-4" and result.interrupted is None

    def test_config_is_fully_resolved(self, finished_run, chat_csv):
        result, _ = finished_run
        cfg = yaml.safe_load((result.run_dir / "config.yaml").read_text())
        assert cfg["prompt"]["name_mapping"] == "alice, bob, carol"
        assert cfg["dataset"]["chatlog"] == str(chat_csv)
        users = json.loads((result.run_dir / "users.json").read_text())
        assert {u["display_name"] for u in users["users"]} == {"alice", "bob", "carol"}

    def test_progress_events_follow_the_contract(self, finished_run):
        result, root = finished_run
        events = read_events(result.run_dir / "progress.jsonl")
        kinds = [e["event"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "done"
        assert events[0]["total"] == 4
        for e in events:
            assert CONTRACT_FIELDS[e["event"]] <= e.keys(), e
        assert [e["step"] for e in events if e["event"] == "log"] == [1, 2, 3, 4]
        assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 4]
        assert events[-1]["checkpoint"] == str(result.checkpoint)
        assert [e["event"] for e in read_events(root / "copy.jsonl")] == kinds

    def test_metrics(self, finished_run):
        result, _ = finished_run
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        assert metrics["steps"] == 4
        assert metrics["train_tokens"] > 0 and metrics["tokens_per_s"] > 0
        assert metrics["eval_perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)


class TestCheckpoint:
    def test_holds_adapter_tokenizer_config_and_users(self, finished_run, tiny_model_dir):
        result, _ = finished_run
        for checkpoint in result.run_dir.glob("checkpoint-*"):
            names = {p.name for p in checkpoint.iterdir()}
            assert {"adapter_model.safetensors", "tokenizer.json", "cloneus_config.yaml", "users.json"} <= names
            adapter = json.loads((checkpoint / "adapter_config.json").read_text())
            assert adapter["base_model_name_or_path"] == str(tiny_model_dir)

    def test_a_copied_checkpoint_loads_with_the_inference_api_alone(self, finished_run, tmp_path):
        from cloneus import Cloneus

        result, _ = finished_run
        copy = shutil.copytree(result.checkpoint, tmp_path / "elsewhere" / "checkpoint-4")
        clone = Cloneus.from_pretrained(copy, device="cpu")
        assert set(clone.author_probabilities([("alice", "pizza on friday?")])) == {"alice", "bob", "carol"}
        assert isinstance(clone.generate([("alice", "hi")], "bob", max_new_tokens=5, seed=1), str)


class TestResumeAndCli:
    def test_resume_continues_the_same_run(self, tiny_model_dir, chat_csv, tmp_path):
        cfg = tiny_config(tiny_model_dir, tmp_path, max_steps=2)
        first = train(cfg, chatlog=chat_csv, run_name="r")
        rc = main(["train", "--resume", str(first.checkpoint), "--max-steps", "4"])
        assert rc == 0
        events = read_events(first.run_dir / "progress.jsonl")
        starts = [e for e in events if e["event"] == "start"]
        assert [s["step"] for s in starts] == [0, 2]
        assert [e["step"] for e in events if e["event"] == "log"][-1] == 4
        assert (first.run_dir / "checkpoint-4" / "cloneus_config.yaml").is_file()

    def test_existing_run_name_is_refused(self, tiny_model_dir, chat_csv, tmp_path):
        cfg = tiny_config(tiny_model_dir, tmp_path, max_steps=1)
        train(cfg, chatlog=chat_csv, run_name="same")
        with pytest.raises(CloneusError, match="already holds a run"):
            train(cfg, chatlog=chat_csv, run_name="same")

    def test_a_failing_run_reports_an_error_event(self, tiny_model_dir, tmp_path):
        progress = tmp_path / "job.jsonl"
        with pytest.raises(CloneusError, match="missing.csv"):
            train(tiny_config(tiny_model_dir, tmp_path), chatlog=tmp_path / "missing.csv", progress_file=progress)
        last = read_events(progress)[-1]
        assert last["event"] == "error" and "missing.csv" in last["message"]

    def test_bad_override_is_a_user_error(self, tmp_path, capsys):
        cfg = tmp_path / "c.yaml"
        cfg.write_text("model:\n  model_id: x\n")
        assert main(["train", "-c", str(cfg), "--set", "training.max_stepz=3"]) == 2
        assert "max_steps" in capsys.readouterr().err

    def test_resume_with_config_flag_is_refused(self, finished_run, capsys):
        result, _ = finished_run
        assert main(["train", "--resume", str(result.checkpoint), "-c", "x.yaml"]) == 2
        assert "--resume uses the run's own config.yaml" in capsys.readouterr().err


class TestInterrupt:
    def test_signal_flag_asks_trainer_to_save_and_stop(self):
        from transformers import TrainerControl, TrainerState, TrainingArguments

        stopper = StopOnSignalCallback()
        before = signal.getsignal(signal.SIGTERM)
        with stopper:
            os.kill(os.getpid(), signal.SIGTERM)
            control = stopper.on_step_end(TrainingArguments(output_dir="unused"), TrainerState(), TrainerControl())
        assert stopper.received == "SIGTERM"
        assert control.should_save and control.should_training_stop
        assert signal.getsignal(signal.SIGTERM) is before

    @pytest.mark.slow
    def test_sigterm_saves_a_checkpoint_and_exits_130(self, tiny_model_dir, chat_csv, tmp_path):
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(tiny_config(tiny_model_dir, tmp_path, max_steps=100_000, save_steps=100_000).to_yaml())
        progress = tmp_path / "progress.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloneus", "train", "-c", str(cfg), "-d", str(chat_csv), "--run-name", "x"]
            + ["--progress-file", str(progress)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and any(e["event"] == "log" for e in read_events(progress)):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted by SIGTERM" in err
        last = read_events(progress)[-1]
        assert last["event"] == "interrupted"
        checkpoint = Path(last["checkpoint"])
        assert (checkpoint / "adapter_model.safetensors").is_file()
        assert (checkpoint / "cloneus_config.yaml").is_file()
