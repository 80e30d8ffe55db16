"""Crash-safe file writes.

A write goes to a temporary file in the same directory, is flushed and fsynced, then renamed over the target.
`os.replace` is atomic on POSIX and Windows, so a reader sees either the old file or the new one, never half of
either, and an exception part-way leaves the old file untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that the file is either fully replaced or not touched at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2) -> None:
    """Serialise `obj` first, so an unserialisable value raises before the target is touched."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def read_yaml_mapping(path: str | Path, kind: str, what: str) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping (an empty file is an empty mapping).

    Args:
        path (`str | Path`): the file.
        kind (`str`): what the file is, for the errors, e.g. "config file".
        what (`str`): what the mapping holds, for the error, e.g. "sections" or "preset name to options".

    Raises:
        ConfigError: the file is missing, is not YAML, or is not a mapping; the message names the file.
    """
    import yaml

    from cloneus.errors import ConfigError

    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of {what}, got {type(tree).__name__}")
    return tree
