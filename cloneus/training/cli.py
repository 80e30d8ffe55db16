"""Commands of this package for `python -m cloneus`: `train` and `demo` (`eval` lives in `cloneus.evaluation`).

Nothing heavy is imported here; torch and transformers load when a command runs. `train` exits 0 when done,
130 after an interrupt (SIGINT/SIGTERM) once a checkpoint is saved, 2 on a user error and 1 on any other failure;
a failed run prints one line with the cause and the run directory (`-v` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import logging
import sys

from cloneus.data.prepare_cli import add_date_order_arguments, date_order_overrides
from cloneus.errors import CloneusError, ConfigError
from cloneus.io import write_line

EXIT_INTERRUPTED = 130


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this package's subcommands; each sets `func(args) -> int`."""
    p = sub.add_parser(
        "train",
        help="LoRA-finetune the model on a chat export",
        description="Train LoRA adapters; writes runs/<model-alias>/<run-name>/ with checkpoints, progress and "
        "metrics. Ctrl-C or SIGTERM saves a checkpoint and exits 130; continue with --resume.",
    )
    p.add_argument("-c", "--config", default=None, help="config YAML (default: config/train_config.yaml)")
    p.add_argument("-d", "--data", default=None, metavar="CHATLOG", help="chat export (overrides dataset.chatlog)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--progress-file", default=None, help="also append progress events (JSON lines) here")
    p.add_argument("--run-name", default=None, help="run directory name (default: a UTC timestamp)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="CKPT",
        help="continue runs/<alias>/<run>/checkpoint-N with that run's config.yaml (plus --set overrides)",
    )
    p.add_argument(
        "--feedback",
        default=None,
        metavar="DB",
        help="preference-tune on the bot's 👍/👎 in this SQLite file (e.g. data/cloneus.db) instead of a chat export",
    )
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="CKPT",
        help="with --feedback: the checkpoint whose adapter is tuned (its config; -c gives feedback: and output_root)",
    )
    add_date_order_arguments(p)
    p.set_defaults(func=train_command)

    p = sub.add_parser(
        "demo",
        help="train the builtin model on the demo chat and print a generated conversation",
        description="A few minutes on a CPU: trains builtin:smollm2-135m on data/demo/demo_chat.json, then lets "
        "the clones talk.",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's budget)")
    p.add_argument("--turns", type=int, default=6, help="messages to generate")
    p.add_argument("--run-name", default=None, help="run directory name (default: a UTC timestamp)")
    p.set_defaults(func=demo_command)


def load_train_config(args: argparse.Namespace):
    """The config a `train` invocation means: the run's own config.yaml when resuming, else -c (or the default)."""
    from cloneus.config import load_config
    from cloneus.training.rundir import RunDir

    overrides = list(args.overrides) + date_order_overrides(args)
    if args.max_steps is not None:
        if args.max_steps <= 0:
            raise ConfigError(f"--max-steps must be positive, got {args.max_steps}")
        overrides.append(f"training.max_steps={args.max_steps}")
    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the run's own config.yaml; drop -c (use --set to change a value)")
        return load_config(RunDir.of_checkpoint(args.resume).config_path, overrides)
    return load_config(args.config, overrides)


def load_feedback_config(args: argparse.Namespace):
    """A `--feedback` run's config: the source checkpoint's own, with -c's `feedback` section and `--set` on top
    (`--max-steps` means `feedback.max_steps`); when resuming, the run's config.yaml."""
    from cloneus.inference.checkpoint import find_checkpoint
    from cloneus.training.feedback import feedback_config
    from cloneus.training.rundir import CHECKPOINT_CONFIG, RunDir

    if args.data:
        raise ConfigError("--feedback trains on reactions, not a chat export; drop -d")
    overrides = list(args.overrides)
    if args.max_steps is not None:
        if args.max_steps <= 0:
            raise ConfigError(f"--max-steps must be positive, got {args.max_steps}")
        overrides.append(f"feedback.max_steps={args.max_steps}")
    if args.resume:
        if args.config or args.source:
            raise ConfigError("--resume uses the run's own config.yaml and source checkpoint; drop -c and --from")
        path = RunDir.of_checkpoint(args.resume).config_path
    elif args.source is None:
        raise ConfigError("--feedback needs --from CHECKPOINT: the served checkpoint whose adapter is tuned")
    else:
        path = find_checkpoint(args.source) / CHECKPOINT_CONFIG
    return feedback_config(path, args.config, overrides)


def failure_line(error: BaseException) -> str:
    """One line for a run that failed: the cause, and the run directory when it was created."""
    cause = str(error) if isinstance(error, CloneusError) else f"{type(error).__name__}: {error}"
    notes = getattr(error, "__notes__", [])
    where = f" ({'; '.join(notes)})" if notes else ""
    return "training failed: " + "; ".join(line.strip() for line in cause.splitlines() if line.strip()) + where


def _run_training(args: argparse.Namespace):
    if args.feedback:
        from cloneus.training.feedback import train_feedback

        cfg = load_feedback_config(args)
        return train_feedback(
            cfg,
            args.feedback,
            args.source,
            run_name=args.run_name,
            resume=args.resume,
            progress_file=args.progress_file,
        )
    if args.source:
        raise ConfigError("--from only goes with --feedback DB")
    from cloneus.training.trainer import train

    cfg = load_train_config(args)
    return train(cfg, chatlog=args.data, run_name=args.run_name, resume=args.resume, progress_file=args.progress_file)


def train_command(args: argparse.Namespace) -> int:
    try:
        result = _run_training(args)
    except Exception as e:
        # -v keeps the traceback; otherwise one line names the cause and the run directory (progress.jsonl there
        # holds the same error event the bot reads).
        if logging.getLogger("cloneus").isEnabledFor(logging.DEBUG):
            raise
        sys.stderr.write(failure_line(e) + "\n")
        return 2 if isinstance(e, CloneusError) else 1
    write_line(f"run directory: {result.run_dir}")
    if result.interrupted:
        sys.stderr.write(
            f"interrupted by {result.interrupted}; saved {result.checkpoint}\n"
            f"continue with: python -m cloneus train --resume {result.checkpoint}\n"
        )
        return EXIT_INTERRUPTED
    write_line(f"final checkpoint: {result.checkpoint}")
    for key in ("train_loss", "eval_loss", "eval_perplexity", "tokens_per_s"):
        if result.metrics.get(key) is not None:
            write_line(f"  {key}: {result.metrics[key]:.4g}")
    if "feedback" in result.metrics:
        write_line(format_feedback_scores(result.metrics["feedback"]))
    return 0


def format_feedback_scores(scores: dict) -> str:
    """The held-out before/after table of a feedback run."""
    lines = [f"  method: {scores['method']}", f"  {'held-out feedback':<28}{'before':>10}{'after':>10}"]
    for key in ("liked_mean_logprob", "disliked_mean_logprob", "margin", "pair_accuracy"):
        if key in scores["before"] and key in scores["after"]:
            lines.append(f"  {key:<28}{scores['before'][key]:>10.4f}{scores['after'][key]:>10.4f}")
    return "\n".join(lines)


def demo_command(args: argparse.Namespace) -> int:
    from cloneus.training.demo import run_demo

    return run_demo(steps=args.steps, turns=args.turns, run_name=args.run_name, write=write_line)
