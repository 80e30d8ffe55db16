"""`python -m cloneus eval CHECKPOINT`: the eval suite's command. Nothing heavy is imported at module level."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cloneus.evaluation.suite import MAX_CONVERSATIONS, MAX_REPLIES, MAX_TURNS


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `eval`; it sets `func(args) -> int`."""
    p = sub.add_parser(
        "eval",
        help="per-member perplexity, next speaker, style attribution and surface stats of a checkpoint",
        description="Scores a checkpoint and its base model (adapter disabled) on the run's held-out conversations; "
        "writes eval.json, eval.png and eval.html into the checkpoint (or --out).",
    )
    p.add_argument("checkpoint", help="a checkpoint-<step> directory")
    p.add_argument("--no-base", dest="base", action="store_false", help="skip the base model (about half the time)")
    p.add_argument("-d", "--data", default=None, metavar="CHATLOG", help="chat export (default: the run's)")
    p.add_argument("--max-conversations", type=int, default=MAX_CONVERSATIONS, help="conversations for perplexity")
    p.add_argument("--max-turns", type=int, default=MAX_TURNS, help="next-speaker turns scored")
    p.add_argument("--max-replies", type=int, default=MAX_REPLIES, help="replies generated per model")
    p.add_argument("--out", default=None, help="directory for eval.json/png/html (default: the checkpoint)")
    p.add_argument("--progress-file", default=None, help="append progress events (JSON lines) here")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=eval_command)


def eval_command(args: argparse.Namespace) -> int:
    from cloneus.evaluation.report import format_report
    from cloneus.evaluation.suite import evaluate_checkpoint

    out = Path(args.out) if args.out else Path(args.checkpoint)
    report = evaluate_checkpoint(
        Path(args.checkpoint),
        base=args.base,
        chatlog=args.data,
        max_conversations=args.max_conversations,
        max_turns=args.max_turns,
        max_replies=args.max_replies,
        device=args.device,
        out_dir=out,
        progress_file=Path(args.progress_file) if args.progress_file else None,
    )
    sys.stdout.write(format_report(report) + "\n")
    sys.stdout.write(f"written to {out / 'eval.json'}, {out / 'eval.png'} and {out / 'eval.html'}\n")
    return 0
