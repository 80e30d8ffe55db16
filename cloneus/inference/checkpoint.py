"""Read what a checkpoint directory carries: config, user index, tokenizer and saved sampling defaults.

A training run writes `checkpoint-<step>/` directories that load on their own (contract 7): the peft adapter,
the tokenizer, `cloneus_config.yaml` and `users.json`. A run directory stands for its latest checkpoint.
Sampling defaults live in the checkpoint's `generation_config.json`, the file transformers uses for the same
purpose; only keys that are `SamplingOptions` fields are read, so the token ids transformers keeps there pass by.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.config import load_config
from cloneus.errors import CheckpointError, CloneusError, ModelNotFoundError
from cloneus.io import atomic_write_json
from cloneus.training.rundir import (
    ADAPTER_CONFIG,
    CHECKPOINT_CONFIG,
    CHECKPOINT_PATTERN,
    USERS_FILE,
    checkpoint_problem,
    complete_checkpoints,
)

if TYPE_CHECKING:
    from cloneus.config import CloneusConfig
    from cloneus.data.users import UserIndex
    from cloneus.inference.sampling import SamplingOptions

logger = logging.getLogger(__name__)

GENERATION_CONFIG_FILE = "generation_config.json"
SAFETENSORS_HEADER_BYTES = 8
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
REFETCH_HINT = "copy the checkpoint again, or load its run directory to use an earlier checkpoint"


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
    """The checkpoint directory `path` names: itself, or for a run directory its newest complete checkpoint.

    A `checkpoint-<step>` whose save was interrupted is skipped (with a warning), so a kill during a save never
    stops a run directory from loading.

    Raises:
        ModelNotFoundError: nothing loadable at `path`, with what was expected.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such checkpoint or run directory")
    if (path / ADAPTER_CONFIG).is_file() or (CHECKPOINT_PATTERN.match(path.name) and path.is_dir()):
        problem = checkpoint_problem(path)
        if problem is not None:
            raise ModelNotFoundError(
                f"{path}: incomplete checkpoint ({problem}); a checkpoint written by `cloneus train` has it, "
                "so its save was probably interrupted: load the run directory to get its newest complete checkpoint"
            )
        return path
    complete = complete_checkpoints(path)
    if complete:
        return complete[-1]
    if any(CHECKPOINT_PATTERN.match(p.name) for p in path.glob("checkpoint-*")):
        raise ModelNotFoundError(f"{path}: no complete checkpoint-<step>/ inside; every save was interrupted")
    raise ModelNotFoundError(
        f"{path}: not a checkpoint (no {ADAPTER_CONFIG}) and not a run directory (no checkpoint-<step>/ inside)"
    )


def safetensors_problem(path: Path) -> str | None:
    """Why a `.safetensors` file cannot load (truncated, or a header that is not one), or None; reads the header only.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's byte range, then the data.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(SAFETENSORS_HEADER_BYTES)
        header_len = int.from_bytes(head, "little") if len(head) == SAFETENSORS_HEADER_BYTES else None
        if header_len is None or SAFETENSORS_HEADER_BYTES + header_len > size:
            return f"truncated: {size} bytes, shorter than its own header"
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        return "its header is not a safetensors header"
    try:
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError):
        return "its header is not a safetensors header"
    needed = SAFETENSORS_HEADER_BYTES + header_len + end
    return f"truncated: {size} bytes of the {needed} its header lists" if needed > size else None


def _json_problem(path: Path) -> str | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"not valid JSON ({e})"
    return None if isinstance(raw, dict) else f"not a JSON object (a {type(raw).__name__})"


def check_checkpoint_files(ckpt: Path) -> None:
    """Refuse a damaged checkpoint before loading any weights, naming the broken file.

    Checks the adapter config (JSON naming a peft type), the adapter weights (complete safetensors) and the tokenizer
    files, the parts whose damage would otherwise surface as a traceback from peft, safetensors or tokenizers.

    Raises:
        CheckpointError: naming the checkpoint, the file and what is wrong with it.
    """
    problem = _json_problem(ckpt / ADAPTER_CONFIG)
    if problem is None and "peft_type" not in json.loads((ckpt / ADAPTER_CONFIG).read_text(encoding="utf-8")):
        problem = "not a peft adapter config (no peft_type)"
    if problem is not None:
        raise CheckpointError(f"{ckpt}: {ADAPTER_CONFIG} is {problem}; {REFETCH_HINT}")
    weights = ckpt / "adapter_model.safetensors"
    problem = safetensors_problem(weights) if weights.is_file() else None
    if problem is not None:
        raise CheckpointError(f"{ckpt}: adapter_model.safetensors is damaged ({problem}); {REFETCH_HINT}")
    if not (ckpt / "tokenizer_config.json").is_file() or not any((ckpt / n).is_file() for n in TOKENIZER_FILES):
        raise CheckpointError(
            f"{ckpt}: tokenizer files missing (tokenizer_config.json and one of {', '.join(TOKENIZER_FILES)}); "
            f"a checkpoint written by `cloneus train` has them; {REFETCH_HINT}"
        )
    for name in ("tokenizer_config.json", "tokenizer.json"):
        problem = _json_problem(ckpt / name) if (ckpt / name).is_file() else None
        if problem is not None:
            raise CheckpointError(f"{ckpt}: {name} is {problem}; {REFETCH_HINT}")


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Find and read a checkpoint's config and user index, after checking its files are whole."""
    from cloneus.data.users import UserIndex

    ckpt = find_checkpoint(path)
    check_checkpoint_files(ckpt)
    return CheckpointInfo(
        path=ckpt, config=load_config(ckpt / CHECKPOINT_CONFIG), users=UserIndex.load(ckpt / USERS_FILE)
    )


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
