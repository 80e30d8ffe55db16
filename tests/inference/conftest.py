"""Checkpoint fixtures for inference tests: the tiny model with random LoRA adapters, laid out like training's.

A checkpoint (contract 7) holds the peft adapter, the tokenizer, `cloneus_config.yaml` and `users.json`. The
adapters use `init_lora_weights=False`, so each one changes the model's outputs and a swap is observable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

AUTHORS = ["alice", "bob", "carol"]
HISTORY = [
    ("alice", "hello there, how is everyone doing today?"),
    ("bob", "pretty good, just got back from the gym"),
    ("carol", "did anyone watch the game last night?"),
    ("alice", "no, I was stuck debugging a segfault until 2am"),
]


def write_users(path: Path) -> None:
    from cloneus.data.users import User, UserIndex

    users = [User(id=str(i), username=n, display_name=n, message_count=10, share=0.2) for i, n in enumerate(AUTHORS)]
    users += [
        User(id="90", username="dave", display_name="dave", message_count=10, share=0.2, opted_out=True),
        User(id="91", username="eve", display_name="eve", message_count=10, share=0.2, excluded=True),
    ]
    UserIndex(users=users).save(path)


def build_checkpoint(base_dir: Path, out: Path, *, seed: int, r: int = 4, overrides: list[str] | None = None) -> Path:
    """Save a random LoRA on the tiny model at `out` with everything a training checkpoint carries."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cloneus.config import apply_overrides, config_from_dict
    from cloneus.io import atomic_write_text

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    lora = LoraConfig(r=r, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    config = config_from_dict(apply_overrides({"model": {"model_id": str(base_dir)}}, overrides or []))
    atomic_write_text(out / "cloneus_config.yaml", config.to_yaml())
    write_users(out / "users.json")
    return out


@pytest.fixture(scope="session")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A run directory with two checkpoints (steps 5 and 10) of different random adapters."""
    run = tmp_path_factory.mktemp("run")
    build_checkpoint(tiny_model_dir, run / "checkpoint-5", seed=1)
    build_checkpoint(tiny_model_dir, run / "checkpoint-10", seed=2)
    return run


@pytest.fixture(scope="session")
def checkpoint(run_dir) -> Path:
    return run_dir / "checkpoint-5"


@pytest.fixture(scope="session")
def clo(checkpoint):
    """One loaded Cloneus shared by read-only tests (it is cheap, but loading once keeps the suite fast)."""
    from cloneus import Cloneus

    return Cloneus.from_pretrained(checkpoint, device="cpu")
