"""Errors a user can act on.

Every error CloneUs raises for bad input names *where* the problem is (file, line, field or key) and *what was
expected*, so the message alone is enough to fix it. Library code raises these; the CLI and the bot print them
without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class CloneusError(Exception):
    """Base class for errors caused by user input or environment, never by a bug."""


class ConfigError(CloneusError):
    """A config file or override has an unknown key or a bad value."""


class DataFormatError(CloneusError):
    """A chat export cannot be read.

    Args:
        path (`str | Path`): the file being read.
        message (`str`): what is wrong and what was expected.
        line (`int`, *optional*): 1-based line (or record) number where the problem is.
        field (`str`, *optional*): the column or JSON field at fault.
    """

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None):
        self.path = Path(path)
        self.line = line
        self.field = field
        where = str(self.path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class ModelNotFoundError(CloneusError):
    """A model id resolves to nothing loadable (missing path, unknown builtin, or a hub id with no network)."""


class UnknownAuthorError(CloneusError):
    """An author is not in the user index, or is excluded or opted out of cloning."""


class CheckpointError(CloneusError):
    """A checkpoint directory is incomplete or damaged; the message names the checkpoint and the broken file."""
