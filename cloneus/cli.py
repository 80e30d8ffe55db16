"""`python -m cloneus <command>`: the library's command line.

Each package owns its commands (`cloneus/<package>/cli.py` defines `add_commands(subparsers)`), so this file is
only the dispatcher. Those modules import nothing heavy at module level, so `cloneus --help` stays fast.
Errors the user can fix (`CloneusError`) print as one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dotenv import load_dotenv

from cloneus import config_cli
from cloneus.data import cli as data_cli
from cloneus.errors import CloneusError
from cloneus.evaluation import cli as evaluation_cli
from cloneus.inference import cli as inference_cli
from cloneus.plugins import cli as plugins_cli
from cloneus.serving import cli as serving_cli
from cloneus.training import cli as training_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloneus", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cli.add_commands(sub)
    training_cli.add_commands(sub)
    evaluation_cli.add_commands(sub)
    inference_cli.add_commands(sub)
    plugins_cli.add_commands(sub)
    config_cli.add_commands(sub)
    serving_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Keys such as YOUTUBE_API_KEY may live in ./.env; the real environment wins over the file.
    load_dotenv(override=False)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args) or 0
    except CloneusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
