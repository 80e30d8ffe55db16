"""`python -m cloneus prepare`: build the tokenized dataset and print what went into it, without training.

It loads only the tokenizer (no model weights), so it is the quick way to tune `hours_between_sessions`,
`chunk_size` and the format options before a run. The result lands in the dataset cache, so the following
`train` with the same config starts straight away.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cloneus.io import write_line

if TYPE_CHECKING:
    from collections.abc import Sequence

HISTOGRAM_BINS = 8
HISTOGRAM_WIDTH = 40


def length_histogram(lengths: Sequence[int], chunk_size: int) -> list[str]:
    """Text histogram of chunk lengths in `HISTOGRAM_BINS` equal bins from 0 to `chunk_size`."""
    if not lengths:
        return ["  (no chunks)"]
    step = max(1, -(-chunk_size // HISTOGRAM_BINS))
    counts = [0] * HISTOGRAM_BINS
    for n in lengths:
        counts[min((n - 1) // step, HISTOGRAM_BINS - 1)] += 1
    top = max(counts)
    width = len(str(chunk_size))
    lines = []
    for i, count in enumerate(counts):
        lo, hi = i * step + 1, min((i + 1) * step, chunk_size)
        bar = "#" * (round(count / top * HISTOGRAM_WIDTH) if count else 0)
        lines.append(f"  {lo:>{width}}-{hi:<{width}} | {bar:<{HISTOGRAM_WIDTH}} {count}")
    return lines


def print_stats(stats: dict, lengths: Sequence[int], chunk_size: int) -> None:
    """Print `PreparedData.stats` and the train chunk length histogram."""
    dropped = ", ".join(f"{k} {v}" for k, v in stats["dropped"].items() if v)
    write_line(f"chat: {stats['chat']}" + (" (from cache)" if stats.get("cached") else ""))
    write_line(f"messages kept: {stats['messages_kept']}" + (f" (dropped: {dropped})" if dropped else ""))
    users = stats["users"]
    write_line(
        f"users: {users['in_chat']} in the chat, {users['trainable']} trained of {users['in_index']} in the index"
    )
    if not stats["timestamps"]:
        write_line("no timestamps: conversations were cut by token budget only")
    for cutoff, counts in stats["sessions"].items():
        write_line(f"sessions ({cutoff} silence): {counts['train']} train, {counts['eval']} eval")
    chunks, tokens = stats["chunks"], stats["tokens"]
    write_line(
        f"chunks: {chunks['train']} train, {chunks['eval']} eval"
        f" ({stats['eval_messages']} held-out messages, {stats['truncated_messages']} truncated messages)"
    )
    long = stats.get("long_messages", {})
    if any(long.values()):
        write_line(
            f"messages over chunk_size: {long.get('truncated', 0)} truncated, {long.get('dropped', 0)} dropped"
            " (dataset.long_messages)"
        )
    for split in ("train", "eval"):
        write_line(f"tokens {split}: {tokens[split]['total']} ({tokens[split]['labelled']} with loss)")
    write_line(f"tokens per chunk (train, chunk_size {chunk_size}):")
    for line in length_histogram(lengths, chunk_size):
        write_line(line)


def add_date_order_arguments(p: argparse.ArgumentParser) -> None:
    """`--dayfirst` / `--monthfirst`: set `dataset.date_format` for a file whose dates fit either order."""
    order = p.add_mutually_exclusive_group()
    for value in ("dayfirst", "monthfirst"):
        order.add_argument(
            f"--{value}",
            dest="date_format",
            action="store_const",
            const=value,
            help=f"read numeric dates like 01/11/2004 {value[:-5]}-first (sets dataset.date_format={value})",
        )


def date_order_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` form of `--dayfirst` / `--monthfirst`, so the flag is validated like the config key."""
    return [f"dataset.date_format={args.date_format}"] if args.date_format else []


def _prepare(args: argparse.Namespace) -> int:
    import datasets

    from cloneus.config import load_config
    from cloneus.data.dataset import prepare_dataset
    from cloneus.models.loading import load_tokenizer

    # The statistics are this command's output; the cache writer's progress bars would only interleave with them.
    datasets.disable_progress_bars()
    cfg = load_config(args.config, args.set + date_order_overrides(args))
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_dataset(cfg, tokenizer, args.data)
    print_stats(data.stats, data.train["length"], cfg.training.chunk_size)
    if data.tokens_added:
        write_line(f"tokens added to the tokenizer: {', '.join(data.tokens_added)} (the trainer resizes embeddings)")
    write_line(f"cached in {data.cache_path}")
    return 0


def add_prepare_command(sub: argparse._SubParsersAction) -> None:
    """Register `prepare`."""
    p = sub.add_parser("prepare", help="build the tokenized dataset and print its statistics (no training)")
    p.add_argument("-c", "--config", help="train config (default: config/train_config.yaml)")
    p.add_argument("-d", "--data", help="chat export; overrides dataset.chatlog")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    add_date_order_arguments(p)
    p.set_defaults(func=_prepare)
