"""Commands of this package for `python -m cloneus`."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this package's subcommands; each sets `func(args) -> int`."""
