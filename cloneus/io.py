"""Crash-safe file writes.

A write goes to a temporary file in the same directory, is flushed and fsynced, then renamed over the target.
`os.replace` is atomic on POSIX and Windows, so a reader sees either the old file or the new one, never half of
either, and an exception part-way leaves the old file untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Temporary folders that are renamed into place when complete are named `.tmp-<what>-<pid of the writer>`.
TMP_PREFIX = ".tmp-"


def write_line(line: str = "") -> None:
    """A command's own output: stdout, flushed at once so it interleaves with the log lines on stderr."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_orphaned_temp_dirs(folder: Path) -> None:
    """Delete `.tmp-<what>-<pid>` folders in `folder` whose writer process is gone (it was killed mid-write).

    Folders of live writers are kept, so two processes filling one cache never delete each other's work.
    """
    for tmp in folder.glob(f"{TMP_PREFIX}*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if tmp.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            logger.info("removing %s, left by a process that was killed while writing it", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _unique_key_loader():
    """A yaml SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, list | dict):
                    continue  # an unhashable key; the base constructor reports it
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first given on line {first_line[key]}); keep only one",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_yaml_mapping(path: str | Path, kind: str, what: str) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping (an empty file is an empty mapping).

    Args:
        path (`str | Path`): the file.
        kind (`str`): what the file is, for the errors, e.g. "config file".
        what (`str`): what the mapping holds, for the error, e.g. "sections" or "preset name to options".

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, not YAML, has a duplicated key, or is not a
            mapping; the message names the file (and the line, for YAML problems).
    """
    import yaml

    from cloneus.errors import ConfigError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a {kind} (YAML)") from None
    except PermissionError:
        raise ConfigError(f"{path}: {kind} cannot be read (permission denied)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: {kind} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8"
        ) from None
    try:
        tree = yaml.load(text, Loader=_unique_key_loader()) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of {what}, got {type(tree).__name__}")
    return tree
