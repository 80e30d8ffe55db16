"""A training process killed during a checkpoint save leaves a run that still loads and resumes.

The kill is made to land inside a save without any hook in the library: before the save at step 4 starts, the test
puts a FIFO where the Trainer will write that checkpoint's `trainer_state.json` (its last file). Opening a FIFO for
writing blocks until someone reads it, so once the adapter and RNG state of step 4 are on disk the trainer is
stuck mid-save, and SIGKILL (or a second Ctrl-C) lands there every time.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloneus.cli import main
from cloneus.errors import CloneusError, ModelNotFoundError
from cloneus.inference.checkpoint import find_checkpoint
from cloneus.training.rundir import RunDir
from tests.training.conftest import tiny_config, write_chat

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 180


def read_events(path: Path) -> list[dict]:
    """Whole lines only: the trainer may be part-way through writing the last one."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1] if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_blocked_in_save(tiny_model_dir, root: Path) -> tuple[subprocess.Popen, Path, Path]:
    """A training subprocess stuck inside its save of checkpoint-4, after checkpoint-2 was saved.

    Returns the process, its run directory and its progress file.
    """
    chat = write_chat(root / "chat.csv")
    cfg = root / "cfg.yaml"
    cfg.write_text(tiny_config(tiny_model_dir, root, max_steps=6, save_steps=2).to_yaml(), encoding="utf-8")
    progress = root / "progress.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloneus", "train", "-c", str(cfg), "-d", str(chat), "--run-name", "k"]
        + ["--progress-file", str(progress)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: any(e["event"] == "start" for e in read_events(progress)), proc, "the start event")
        run = Path(next(e for e in read_events(progress) if e["event"] == "start")["run_dir"])
        staged = run / ".tmp-checkpoint-4" / "checkpoint-4"
        staged.mkdir(parents=True)
        os.mkfifo(staged / "trainer_state.json")
        wait_for(lambda: (staged / "rng_state.pth").is_file(), proc, "the save of checkpoint-4")
    except BaseException:
        proc.kill()
        proc.stderr.close()
        raise
    return proc, run, progress


def read_stderr_until(proc: subprocess.Popen, text: str) -> str:
    """The process's stderr up to and including `text` (read from the pipe's fd, so no line is held in a buffer)."""
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + WAIT_S
    while text.encode() not in seen:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {text!r} on stderr: {seen.decode()[-2000:]}")
        if select.select([fd], [], [], 1.0)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise AssertionError(f"stderr closed before {text!r}: {seen.decode()[-2000:]}")
            seen += chunk
    return seen.decode()


@pytest.fixture(scope="module")
def killed_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A run SIGKILLed while saving checkpoint-4, after checkpoint-2 was saved; returns its run directory."""
    proc, run, _ = start_blocked_in_save(tiny_model_dir, tmp_path_factory.mktemp("killed"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return run


class TestKillDuringSave:
    def test_the_interrupted_save_never_appears_as_a_checkpoint(self, killed_run):
        assert sorted(p.name for p in killed_run.glob("checkpoint-*")) == ["checkpoint-2"]
        assert (killed_run / ".tmp-checkpoint-4" / "checkpoint-4" / "adapter_model.safetensors").is_file()
        assert RunDir(killed_run).checkpoints() == [killed_run / "checkpoint-2"]

    def test_the_run_directory_loads_its_newest_complete_checkpoint(self, killed_run):
        from cloneus import Cloneus

        assert find_checkpoint(killed_run) == killed_run / "checkpoint-2"
        clone = Cloneus.from_pretrained(killed_run, device="cpu")
        assert clone.checkpoint == killed_run / "checkpoint-2"

    def test_resume_finishes_the_run_and_clears_the_leftover(self, killed_run, capsys):
        assert main(["train", "--resume", str(killed_run / "checkpoint-2")]) == 0
        assert not list(killed_run.glob(".tmp-*"))
        assert [p.name for p in RunDir(killed_run).checkpoints()] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
        last = read_events(killed_run / "progress.jsonl")[-1]
        assert last["event"] == "done" and last["checkpoint"] == str(killed_run / "checkpoint-6")
        state = json.loads((killed_run / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8"))
        assert state["global_step"] == 4


class TestSecondCtrlCDuringSave:
    def test_stops_at_once_and_the_interrupted_event_names_a_complete_checkpoint(self, tiny_model_dir, tmp_path):
        proc, run, progress = start_blocked_in_save(tiny_model_dir, tmp_path)
        proc.send_signal(signal.SIGINT)  # the first asks for a save and a stop after this step
        before = read_stderr_until(proc, "SIGINT received")
        proc.send_signal(signal.SIGINT)  # the second stops at once, inside the blocked save
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-3000:]
        assert "Traceback" not in before + err
        last = read_events(progress)[-1]
        assert last["event"] == "interrupted" and last["checkpoint"] == str(run / "checkpoint-2")
        assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]


class TestStagedSaves:
    def test_rotation_keeps_the_newest_complete_checkpoints_and_no_staging_folder(self, tiny_model_dir, tmp_path):
        from cloneus.training.trainer import train

        cfg = tiny_config(tiny_model_dir, tmp_path, max_steps=6, save_steps=2, save_total_limit=2)
        result = train(cfg, chatlog=write_chat(tmp_path / "chat.csv"), run_name="rot")
        assert sorted(p.name for p in result.run_dir.iterdir() if p.name.startswith((".", "checkpoint"))) == [
            "checkpoint-4",
            "checkpoint-6",
        ]
        assert result.checkpoint == result.run_dir / "checkpoint-6"
        events = [e for e in read_events(result.run_dir / "progress.jsonl") if e["event"] == "checkpoint"]
        assert [e["step"] for e in events] == [2, 4, 6]


class TestCheckpointLeftHalfWritten:
    """The failure of older versions: a `checkpoint-N` folder without the files written last."""

    @pytest.fixture
    def run_with_broken_newest(self, killed_run, tmp_path) -> Path:
        run = tmp_path / "run"
        shutil.copytree(killed_run, run, ignore=shutil.ignore_patterns(".tmp-*"))
        broken = run / "checkpoint-8"
        shutil.copytree(run / "checkpoint-2", broken)
        (broken / "cloneus_config.yaml").unlink()
        (broken / "users.json").unlink()
        return run

    def test_readers_skip_it(self, run_with_broken_newest, caplog):
        run = run_with_broken_newest
        newest = RunDir(run).checkpoints()[-1]
        assert newest.name != "checkpoint-8"
        assert find_checkpoint(run) == newest
        assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-8" in caplog.text

    def test_loading_it_directly_names_the_missing_file(self, run_with_broken_newest):
        with pytest.raises(ModelNotFoundError, match=r"checkpoint-8: incomplete checkpoint \(no cloneus_config.yaml"):
            find_checkpoint(run_with_broken_newest / "checkpoint-8")

    def test_resume_from_it_names_a_complete_one(self, run_with_broken_newest, capsys):
        run = run_with_broken_newest
        with pytest.raises(CloneusError, match=r"checkpoint-8: incomplete checkpoint.*resume from .*checkpoint-"):
            RunDir.of_checkpoint(run / "checkpoint-8")
        assert main(["train", "--resume", str(run / "checkpoint-8")]) != 0
        err = capsys.readouterr().err
        assert "incomplete checkpoint" in err and "Traceback" not in err

    def test_a_run_with_only_broken_checkpoints_says_so(self, tmp_path):
        (tmp_path / "checkpoint-2").mkdir()
        with pytest.raises(ModelNotFoundError, match="no complete checkpoint"):
            find_checkpoint(tmp_path)
