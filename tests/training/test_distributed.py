"""`accelerate launch` with two processes trains one run as DDP (gloo on CPU): ranks share batches and a directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_ddp_run_writes_one_run_directory(tiny_model_dir, chat_csv, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate's launcher is installed with the package"
    cfg = tmp_path / "cfg.yaml"
    cfg_obj = tiny_config(tiny_model_dir, tmp_path, max_steps=2)
    cfg.write_text(cfg_obj.to_yaml())
    proc = subprocess.run(
        [accelerate, "launch", "--config_file", "config/accelerate/ddp.yaml", "--num_processes", "2"]
        + ["-m", "cloneus", "train", "-c", str(cfg), "-d", str(chat_csv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "runs" / tiny_model_dir.name).iterdir())
    assert len(runs) == 1, "both ranks must agree on one run directory"
    events = [json.loads(line) for line in (runs[0] / "progress.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("start") == 1, "only the main process writes progress"
    assert events[-1]["event"] == "done"
    rows = packed_rows(cfg_obj, chat_csv)
    last = [e for e in events if e["event"] == "log"][-1]
    assert last["epoch"] == pytest.approx(2 * last["step"] / rows), "each rank consumes its own row per step"
    assert (runs[0] / "checkpoint-2" / "adapter_model.safetensors").is_file()


def packed_rows(cfg, chat_csv: Path) -> int:
    """Training rows per epoch for this config (the dataset comes from the run's cache)."""
    from cloneus.data.dataset import prepare_dataset
    from cloneus.models.loading import load_tokenizer
    from cloneus.training.packing import pack_dataset

    data = prepare_dataset(cfg, load_tokenizer(cfg.model), chat_csv)
    return len(pack_dataset(data.train, cfg.training.chunk_size))
