"""Read what a checkpoint directory carries: config, user index, tokenizer and saved sampling defaults.

A training run writes `checkpoint-<step>/` directories that load on their own (contract 7): the peft adapter,
the tokenizer, `cloneus_config.yaml` and `users.json`. A run directory stands for its latest checkpoint.
Sampling defaults live in the checkpoint's `generation_config.json`, the file transformers uses for the same
purpose; only keys that are `SamplingOptions` fields are read, so the token ids transformers keeps there pass by.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.config import load_config
from cloneus.errors import CloneusError, ModelNotFoundError
from cloneus.io import atomic_write_json

if TYPE_CHECKING:
    from cloneus.config import CloneusConfig
    from cloneus.data.users import UserIndex
    from cloneus.inference.sampling import SamplingOptions

logger = logging.getLogger(__name__)

CONFIG_FILE = "cloneus_config.yaml"
USERS_FILE = "users.json"
ADAPTER_FILE = "adapter_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint, read from disk.

    Args:
        path (`Path`): the `checkpoint-<step>` directory.
        config (`CloneusConfig`): the resolved config it was trained with.
        users (`UserIndex`): the user index snapshot it was trained with.
    """

    path: Path
    config: CloneusConfig
    users: UserIndex


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory `path` names: itself, or for a run directory its highest-step checkpoint.

    Raises:
        ModelNotFoundError: nothing loadable at `path`, with what was expected.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such checkpoint or run directory")
    if (path / ADAPTER_FILE).is_file():
        return path
    steps = sorted(
        (int(m.group(1)), p) for p in path.glob("checkpoint-*") if (m := _STEP.match(p.name)) and p.is_dir()
    )
    if steps:
        return steps[-1][1]
    raise ModelNotFoundError(
        f"{path}: not a checkpoint (no {ADAPTER_FILE}) and not a run directory (no checkpoint-<step>/ inside)"
    )


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Find and read a checkpoint's config and user index."""
    from cloneus.data.users import UserIndex

    ckpt = find_checkpoint(path)
    for name in (CONFIG_FILE, USERS_FILE):
        if not (ckpt / name).is_file():
            raise ModelNotFoundError(f"{ckpt}: missing {name}; a checkpoint written by `cloneus train` has it")
    return CheckpointInfo(path=ckpt, config=load_config(ckpt / CONFIG_FILE), users=UserIndex.load(ckpt / USERS_FILE))


def read_sampling_defaults(directory: Path | None) -> SamplingOptions:
    """`SamplingOptions` from `directory/generation_config.json` (keys it doesn't know are skipped), else defaults.

    Raises:
        CloneusError: the file is not JSON, or a value is out of range (naming the file and field).
    """
    from pydantic import ValidationError

    from cloneus.inference.sampling import SamplingOptions

    file = directory / GENERATION_CONFIG_FILE if directory is not None else None
    if file is None or not file.is_file():
        return SamplingOptions()
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CloneusError(f"{file}: not valid JSON ({e})") from None
    known = {k: v for k, v in raw.items() if k in SamplingOptions.model_fields}
    logger.debug("%s: ignoring non-sampling keys %s", file, sorted(set(raw) - set(known)))
    try:
        return SamplingOptions(**known)
    except ValidationError as e:
        raise CloneusError(f"{file}: {e}") from None


def save_sampling_defaults(directory: Path, opts: SamplingOptions, *, overwrite: bool = False) -> Path:
    """Write `opts` (fields that differ from the defaults) into `directory/generation_config.json`.

    Keys of an existing file that are not sampling options (token ids) are kept. An existing file is replaced
    only with `overwrite=True`, so saved defaults are never lost by accident.

    Raises:
        CloneusError: the file exists and `overwrite` is False.
    """
    from cloneus.inference.sampling import SamplingOptions

    file = directory / GENERATION_CONFIG_FILE
    existing: dict = {}
    if file.is_file():
        if not overwrite:
            raise CloneusError(f"{file} exists; pass overwrite=True to replace its sampling defaults")
        existing = json.loads(file.read_text(encoding="utf-8"))
    kept = {k: v for k, v in existing.items() if k not in SamplingOptions.model_fields}
    atomic_write_json(file, {**kept, **opts.model_dump(mode="json", exclude_defaults=True)})
    return file
