"""Commands of this package for `python -m cloneus`.

`index build|set|show` (and `build`, the seed's `scripts/build.py`, as an alias of `index build`) manage the user
index; nothing here prompts, so every step can be scripted. Output is plain text on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.data.prepare_cli import add_date_order_arguments, add_prepare_command, date_order_overrides
from cloneus.io import write_line

if TYPE_CHECKING:
    from cloneus.data.users import User, UserIndex

DEFAULT_USERS_JSON = "config/users.json"
SHOW_LIMIT = 25


def _status(user: User, min_share: float) -> str:
    if user.opted_out:
        return "opted out"
    if user.excluded:
        return "excluded"
    if user.is_bot:
        return "bot"
    if not user.included:
        threshold = f"{int(min_share)} messages" if min_share > 1 else f"{min_share:.2%}"
        return f"context (below {threshold})"
    return "included"


def print_users(index: UserIndex, limit: int | None = SHOW_LIMIT) -> None:
    """Print the users as a table: everyone included or edited, then the first `limit` others."""
    notable = [u.included or u.excluded or u.opted_out or u.is_bot or bool(u.first_name) for u in index.users]
    others = 0
    shown = []
    for user, keep in zip(index.users, notable, strict=True):
        if not keep:
            others += 1
            if limit is not None and others > limit:
                continue
        shown.append(user)
    width = max([len(u.display_name) for u in shown] + [12])
    row = f"{{:<{width}}}  {{:<{width}}}  {{:>8}}  {{:>7}}  {{:<12}}  {{}}"
    write_line(row.format("user", "username", "messages", "share", "first name", "status"))
    for u in shown:
        status = _status(u, index.min_share)
        write_line(
            row.format(u.display_name, u.username, u.message_count, f"{u.share:.2%}", u.first_name or "-", status)
        )
    hidden = len(index.users) - len(shown)
    if hidden:
        write_line(f"... and {hidden} more context-only users (show them with `python -m cloneus index show --all`)")
    write_line(f"{len(index.trainable())} of {len(index.users)} users will be trained (min share {index.min_share:g})")


def _index_build(args: argparse.Namespace) -> int:
    from cloneus.config import CleaningConfig, load_config
    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat
    from cloneus.data.users import DEFAULT_MIN_SHARE, UserIndex

    cleaning, min_share, output = CleaningConfig(), DEFAULT_MIN_SHARE, Path(DEFAULT_USERS_JSON)
    date_format = args.date_format or "auto"
    if args.config:
        cfg = load_config(args.config, date_order_overrides(args))
        cleaning, min_share, output = cfg.dataset.cleaning, cfg.dataset.min_share, Path(cfg.dataset.users_json)
        date_format = cfg.dataset.date_format
    output = Path(args.output) if args.output else output
    existing = UserIndex.load(output) if output.exists() else None
    if args.min_share is not None:
        min_share = args.min_share
    elif existing is not None:
        min_share = existing.min_share
    frame = read_chat(args.file, chat=args.chat, date_format=date_format)
    # Counts are of cleaned messages before burst merging: a user's share should not depend on typing style.
    # Bots stay in, so the index lists them (flagged) instead of silently missing them.
    result = clean_messages(frame, cleaning.model_copy(update={"drop_bots": False}), merge_window_minutes=0)
    index = UserIndex.build(result.frame, min_share, existing=existing, exclude=args.exclude, bots=args.bot)
    index.save(output)
    print_users(index)
    dropped = ", ".join(f"{k} {v}" for k, v in result.dropped.items() if v and k != "merged")
    write_line(
        f"{len(result.frame)} messages counted from {args.file}" + (f" (dropped: {dropped})" if dropped else "")
    )
    for key, env in (("guild", "GUILDS_ID"), ("channel", "CHANNEL_ID")):
        meta = frame.attrs.get(key)
        if isinstance(meta, dict) and meta.get("id"):
            write_line(f"{env}={meta['id']}  # {key} {meta.get('name', '')!r}; put it in .env for the bot")
    write_line(f"wrote {output}" + (" (kept earlier edits)" if existing else ""))
    return 0


def _index_set(args: argparse.Namespace) -> int:
    from cloneus.data.users import UserIndex
    from cloneus.errors import CloneusError

    changes = {
        "first_name": args.first_name,
        "excluded": args.excluded,
        "opted_out": args.opted_out,
        "is_bot": args.is_bot,
    }
    if all(v is None for v in changes.values()):
        raise CloneusError(
            "index set: nothing to change; give --first-name, --exclude/--include, --opt-out/--opt-in "
            "or --bot/--not-bot"
        )
    index = UserIndex.load(args.index)
    user = index.set(args.name, **changes)
    index.save(args.index)
    write_line(
        f"{user.display_name}: {_status(user, index.min_share)}"
        + (f", first name {user.first_name}" if user.first_name else "")
    )
    return 0


def _index_show(args: argparse.Namespace) -> int:
    from cloneus.data.users import UserIndex

    print_users(UserIndex.load(args.index), limit=None if args.all else SHOW_LIMIT)
    return 0


def _add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="chat export (DiscordChatExporter JSON/CSV, generic CSV, WhatsApp .txt, Telegram)")
    p.add_argument(
        "--min-share",
        type=float,
        help="share of messages (or a count when > 1) a user needs to be trained; default: the existing index's, "
        "else the config's dataset.min_share (0.005)",
    )
    p.add_argument("--exclude", nargs="+", default=[], metavar="NAME", help="users to keep as context only")
    p.add_argument("--bot", nargs="+", default=[], metavar="NAME", help="accounts that are bots")
    p.add_argument("-o", "--output", help=f"user index to write (default: {DEFAULT_USERS_JSON})")
    p.add_argument("--chat", help="full Telegram export only: the chat to read, by name or id (default: the largest)")
    p.add_argument("-c", "--config", help="train config whose dataset.cleaning, min_share and users_json to use")
    add_date_order_arguments(p)
    p.set_defaults(func=_index_build)


def _add_index_commands(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser("index", help="build, edit and show the user index (config/users.json)")
    actions = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    _add_build_arguments(actions.add_parser("build", help="count users in a chat export and write the index"))

    edit = actions.add_parser("set", help="edit one user: first name, exclusion, opt-out, bot flag")
    edit.add_argument("name", help="username or display name")
    edit.add_argument("--first-name", help="used for {fname} in author tags")
    pairs = (
        ("--exclude", "--include", "excluded", "keep as context only", "train again"),
        ("--opt-out", "--opt-in", "opted_out", "the person withdrew consent", "consent given again"),
        ("--bot", "--not-bot", "is_bot", "mark as a bot", "not a bot"),
    )
    for on, off, dest, on_help, off_help in pairs:
        group = edit.add_mutually_exclusive_group()
        group.add_argument(on, dest=dest, action="store_const", const=True, default=None, help=on_help)
        group.add_argument(off, dest=dest, action="store_const", const=False, help=off_help)
    edit.add_argument("-i", "--index", default=DEFAULT_USERS_JSON, help="user index file")
    edit.set_defaults(func=_index_set)

    show = actions.add_parser("show", help="print the user index")
    show.add_argument("-i", "--index", default=DEFAULT_USERS_JSON, help="user index file")
    show.add_argument("--all", action="store_true", help="list every context-only user too")
    show.set_defaults(func=_index_show)

    _add_build_arguments(sub.add_parser("build", help="alias of `index build` (the seed's scripts/build.py)"))


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this package's subcommands; each sets `func(args) -> int`."""
    _add_index_commands(sub)
    add_prepare_command(sub)
