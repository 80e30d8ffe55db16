"""`python -m cloneus youtube export|import|stats|check`: manage the YouTube cache from the command line.

Export and import move the cache between a bot machine and a training machine as JSON lines. The YouTube plugin
(and google-api-python-client with it) is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
import os
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloneus.config import YoutubeConfig


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this package's subcommands; each sets `func(args) -> int`."""
    youtube = sub.add_parser("youtube", help="YouTube link cache: export, import, stats, key check")
    actions = youtube.add_subparsers(dest="youtube_command", required=True, metavar="ACTION")

    export = actions.add_parser("export", help="write the cache (videos, invalid ids, searches) to a JSONL file")
    export.add_argument("file", type=Path)
    export.set_defaults(func=run_export)
    imp = actions.add_parser("import", help="merge a JSONL export into the cache (newer entries win; idempotent)")
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=run_import)
    stats = actions.add_parser("stats", help="units used today, budget, cache size")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=run_stats)
    check = actions.add_parser("check", help="check YOUTUBE_API_KEY with one 1-unit call")
    check.set_defaults(func=run_check)
    for action in (export, imp, stats, check):
        action.add_argument("-c", "--config", type=Path, help="config file (default config/train_config.yaml)")
        action.add_argument("--db", help="SQLite file, overriding youtube.db_path")


def youtube_config(args: argparse.Namespace) -> YoutubeConfig:
    """The `youtube` section of `--config` (or of the default config file when it exists), with `--db` applied."""
    from cloneus.config import DEFAULT_CONFIG_PATH, YoutubeConfig, load_config

    if args.config is not None or DEFAULT_CONFIG_PATH.is_file():
        cfg = load_config(args.config).youtube
    else:
        cfg = YoutubeConfig()
    return cfg.model_copy(update={"db_path": args.db}) if args.db else cfg


def _emit(line: str) -> None:
    print(line)  # noqa: T201 -- this is the command's output


def run_export(args: argparse.Namespace) -> int:
    from cloneus.plugins.youtube.cache import VideoCache

    cfg = youtube_config(args)
    with closing(VideoCache(cfg.db_path)) as cache:
        counts = cache.export_jsonl(args.file)
    _emit(f"exported {counts['video']} videos, {counts['invalid']} invalid ids, {counts['search']} searches")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from cloneus.plugins.youtube.cache import VideoCache

    cfg = youtube_config(args)
    with closing(VideoCache(cfg.db_path)) as cache:
        changed = cache.import_jsonl(args.file)
    _emit(
        f"imported into {cfg.db_path}: {changed['video']} videos, {changed['invalid']} invalid ids, "
        f"{changed['search']} searches added or updated"
    )
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from cloneus.plugins.youtube import YouTubeLinks

    with YouTubeLinks(youtube_config(args)) as links:
        stats = links.stats()
    if args.json:
        _emit(json.dumps(stats))
    else:
        for key in (
            "units_used",
            "daily_quota",
            "units_left",
            "quota_day",
            "resets_at",
            "videos",
            "invalid",
            "searches",
        ):
            _emit(f"{key:12} {stats[key]}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from dotenv import dotenv_values

    from cloneus.plugins.youtube import YouTubeLinks

    cfg = youtube_config(args).model_copy(update={"enabled": "auto"})
    # The key usually lives in .env next to the bot; a variable set in the shell wins over it.
    environ = {**{k: v for k, v in dotenv_values(".env").items() if v}, **os.environ}
    links = YouTubeLinks.from_env(cfg, environ)
    if links is None:
        _emit("YOUTUBE_API_KEY is not set: links pass through untouched")
        return 1
    with links:
        problem = links.check_key()
    _emit(problem or "YouTube API key works")
    return 1 if problem else 0
