"""Commands of this package for `python -m cloneus`: `chat`.

Nothing heavy is imported here; torch and transformers load when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from cloneus.errors import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this package's subcommands; each sets `func(args) -> int`."""
    p = sub.add_parser(
        "chat",
        help="talk with the clones of a checkpoint in the terminal",
        description="Type as yourself; after each line the model picks who speaks next and replies. "
        "Commands: /as NAME text, /next, /set key=value ..., /help, /quit.",
    )
    p.add_argument("checkpoint", help="a checkpoint-<step> directory, or a run directory (its latest checkpoint)")
    p.add_argument("--as", dest="me", default="you", metavar="NAME", help="your name in the chat (default: you)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampling option (temperature=0.7) or an inference setting (inference.backend=openai); repeatable",
    )
    p.add_argument("--mode", default="weighted", help="next-speaker mode: weighted, top, uniform, lurk(0.5)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=chat_command)


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Separate `inference.*` config overrides from sampling options; other config sections are refused."""
    config, sampling = [], []
    for item in items:
        key = item.partition("=")[0].strip()
        if "." not in key:
            sampling.append(item)
        elif key.startswith("inference."):
            config.append(item)
        else:
            raise ConfigError(f"--set {item!r}: chat accepts sampling options and inference.* settings only")
    return config, sampling


def chat_command(args: argparse.Namespace) -> int:
    from cloneus.config import apply_overrides, config_from_dict
    from cloneus.inference.chat import parse_assignments, run_chat
    from cloneus.inference.checkpoint import read_checkpoint
    from cloneus.inference.cloneus import Cloneus
    from cloneus.inference.speaker import parse_mode
    from cloneus.plugins.youtube import YouTubeLinks

    try:
        parse_mode(args.mode)
    except ValueError as e:
        raise ConfigError(f"--mode: {e}") from None
    config_items, sampling_items = split_overrides(args.overrides)
    inference = None
    config = read_checkpoint(args.checkpoint).config
    if config_items:
        inference = config_from_dict(apply_overrides(config.model_dump(mode="json"), config_items), "--set").inference
    # YouTube links typed into the chat become the tags training used (when a key or a cache is configured).
    links = YouTubeLinks.from_env(config.youtube)
    try:
        clo = Cloneus.from_pretrained(args.checkpoint, device=args.device, inference=inference, youtube=links)
        run_chat(clo, sys.stdin, sys.stdout, me=args.me, sampling=parse_assignments(sampling_items), mode=args.mode)
    finally:
        if links is not None:
            links.close()
    return 0
