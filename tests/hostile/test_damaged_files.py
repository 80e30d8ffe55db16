"""Damaged files left by crashes, full disks or bad copies: checkpoints and dataset cache entries.

A damaged checkpoint gets one `CloneusError` from `Cloneus.from_pretrained` naming the checkpoint and the broken
file, never a traceback from peft, safetensors or tokenizers. A damaged cache entry is detected, logged once,
removed and rebuilt, and the rebuilt data equals a fresh build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloneus.errors import CheckpointError, CloneusError
from tests.inference.conftest import build_checkpoint
from tests.training.conftest import tiny_config, write_chat


@pytest.fixture(scope="module")
def good_checkpoint(tiny_model_dir, tmp_path_factory) -> Path:
    return build_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("good") / "checkpoint-3", seed=3)


@pytest.fixture
def damaged(good_checkpoint, tmp_path) -> Path:
    """A fresh copy of the good checkpoint for a test to damage."""
    return Path(shutil.copytree(good_checkpoint, tmp_path / "run" / "checkpoint-3"))


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def load(checkpoint: Path):
    from cloneus import Cloneus

    return Cloneus.from_pretrained(checkpoint, device="cpu")


DAMAGE = [
    ("weights-half", lambda c: truncate(c / "adapter_model.safetensors", 0.5), "adapter_model.safetensors is damaged"),
    ("weights-header-only", lambda c: truncate(c / "adapter_model.safetensors", 0.01), "adapter_model.safetensors"),
    ("weights-empty", lambda c: (c / "adapter_model.safetensors").write_bytes(b""), "shorter than its own header"),
    ("weights-garbage", lambda c: (c / "adapter_model.safetensors").write_bytes(b"\x10" * 64), "adapter_model"),
    ("weights-missing", lambda c: (c / "adapter_model.safetensors").unlink(), "no adapter_model.safetensors"),
    ("adapter-config-garbage", lambda c: (c / "adapter_config.json").write_bytes(b"\x00{"), "adapter_config.json is"),
    ("adapter-config-list", lambda c: (c / "adapter_config.json").write_text("[1]"), "not a JSON object (a list)"),
    ("adapter-config-not-peft", lambda c: (c / "adapter_config.json").write_text("{}"), "no peft_type"),
    ("adapter-config-missing", lambda c: (c / "adapter_config.json").unlink(), "no adapter_config.json"),
    ("tokenizer-missing", lambda c: (c / "tokenizer.json").unlink(), "tokenizer files missing"),
    ("tokenizer-config-missing", lambda c: (c / "tokenizer_config.json").unlink(), "tokenizer files missing"),
    ("tokenizer-truncated", lambda c: truncate(c / "tokenizer.json", 0.5), "tokenizer.json is not valid JSON"),
    ("config-garbage", lambda c: (c / "cloneus_config.yaml").write_bytes(b"model: [\n"), "cloneus_config.yaml: not"),
    ("config-missing", lambda c: (c / "cloneus_config.yaml").unlink(), "no cloneus_config.yaml"),
    ("users-utf16", lambda c: (c / "users.json").write_bytes('{"users": []}'.encode("utf-16")), "users.json: user"),
]


class TestDamagedCheckpoint:
    @pytest.mark.parametrize(("damage", "expected"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
    def test_gets_one_error_naming_the_checkpoint_and_the_file(self, damaged, damage, expected):
        damage(damaged)
        with pytest.raises(CloneusError) as e:
            load(damaged)
        assert str(damaged) in str(e.value) and expected in str(e.value)

    def test_the_undamaged_copy_loads(self, damaged):
        assert load(damaged).checkpoint == damaged

    def test_a_base_of_another_shape(self, damaged, tmp_path):
        from cloneus.models.tiny import build_tiny_model

        other = build_tiny_model(tmp_path / "wider-base", hidden_size=64)
        cfg = yaml.safe_load((damaged / "cloneus_config.yaml").read_text(encoding="utf-8"))
        cfg["model"]["model_id"] = str(other)
        (damaged / "cloneus_config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        with pytest.raises(CheckpointError) as e:
            load(damaged)
        message = str(e.value)
        assert message.startswith(f"{damaged}: adapter_model.safetensors does not fit the base model {other}")
        assert "another base" in message and "\n" not in message

    def test_a_run_directory_falls_back_past_an_incomplete_newest(self, good_checkpoint, damaged):
        newest = damaged.parent / "checkpoint-9"
        shutil.copytree(good_checkpoint, newest)
        (newest / "users.json").unlink()
        assert load(damaged.parent).checkpoint == damaged

    def test_the_cli_prints_one_line(self, damaged):
        truncate(damaged / "adapter_model.safetensors", 0.5)
        proc = subprocess.run(
            [sys.executable, "-m", "cloneus", "chat", str(damaged), "--device", "cpu"],
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            input="",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "adapter_model.safetensors is damaged" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def prepared(tiny_model_dir, tmp_path):
    """A config, tokenizer and chat whose dataset has been prepared once (so its cache entry exists)."""
    from cloneus.data.dataset import prepare_dataset
    from cloneus.models.loading import load_tokenizer

    cfg = tiny_config(tiny_model_dir, tmp_path)
    chat = write_chat(tmp_path / "chat.csv")
    tokenizer = load_tokenizer(cfg.model)
    first = prepare_dataset(cfg, tokenizer, chat)
    return cfg, tokenizer, chat, first


def arrow_file(entry: Path) -> Path:
    return next((entry / "train").glob("*.arrow"))


CACHE_DAMAGE = [
    ("arrow-half", lambda e: truncate(arrow_file(e), 0.5), "is damaged (train/data-00000-of-00001.arrow is"),
    ("arrow-missing", lambda e: arrow_file(e).unlink(), "train/data-00000-of-00001.arrow is missing"),
    ("meta-empty", lambda e: (e / "meta.json").write_text(""), "meta.json is unreadable"),
    ("meta-garbage", lambda e: (e / "meta.json").write_bytes(b"\xff\xfe{"), "meta.json is unreadable"),
    ("meta-missing", lambda e: (e / "meta.json").unlink(), "meta.json is unreadable"),
    ("meta-without-files", lambda e: (e / "meta.json").write_text("{}"), "meta.json lists no files"),
    ("state-garbage", lambda e: (e / "train" / "state.json").write_text("{}" + " " * 10), "state.json is"),
]


class TestDamagedCacheEntry:
    @pytest.mark.parametrize(("damage", "expected"), [d[1:] for d in CACHE_DAMAGE], ids=[d[0] for d in CACHE_DAMAGE])
    def test_is_rebuilt_with_one_log_line(self, prepared, damage, expected, caplog):
        from cloneus.data.dataset import prepare_dataset

        cfg, tokenizer, chat, first = prepared
        damage(first.cache_path)
        caplog.clear()
        again = prepare_dataset(cfg, tokenizer, chat)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "cache" in r.getMessage()]
        assert len(warnings) == 1 and expected in warnings[0] and "rebuilding it" in warnings[0]
        assert again.cache_path == first.cache_path and not again.stats.get("cached")
        assert again.train["input_ids"] == first.train["input_ids"]
        assert not list(first.cache_path.parent.glob(".tmp-*"))
        third = prepare_dataset(cfg, tokenizer, chat)
        assert third.stats.get("cached") and third.train["labels"] == first.train["labels"]

    def test_an_orphan_of_a_killed_prepare_is_removed(self, prepared, tmp_path):
        from cloneus.data.dataset import prepare_dataset

        cfg, tokenizer, chat, first = prepared
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        orphan = first.cache_path.parent / f".tmp-{first.cache_path.name}x-{int(dead.stdout)}"
        (orphan / "train").mkdir(parents=True)
        (orphan / "train" / "data-00000-of-00001.arrow").write_bytes(b"half")
        live = first.cache_path.parent / f".tmp-other-{os.getppid()}"
        live.mkdir()
        shutil.rmtree(first.cache_path)
        prepare_dataset(cfg, tokenizer, chat)
        assert not orphan.exists() and live.is_dir()
        assert json.loads((first.cache_path / "meta.json").read_text(encoding="utf-8"))["files"]
