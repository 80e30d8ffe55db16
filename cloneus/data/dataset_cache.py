"""The on-disk cache of prepared datasets: its key, and crash-safe writes of an entry.

An entry is keyed by a hash of everything the prepared data depends on: the chat file's bytes, the user index, the
config sections that shape the data, the tokenizer's vocabulary and chat template, and `FORMAT_VERSION` (bump it
when the output of the data pipeline changes). It is written to a temporary folder and renamed into place, so a
crash never leaves half an entry, and two processes preparing the same data at once both end with a valid one.
`meta.json` records the size of every file of the entry; an entry damaged afterwards (a truncated arrow file, an
empty `meta.json`) is detected on load, removed and rebuilt. Temporary folders of writers that were killed are
removed by the next write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.io import TMP_PREFIX, atomic_write_json, remove_orphaned_temp_dirs

if TYPE_CHECKING:
    from datasets import Dataset

    from cloneus.config import CloneusConfig
    from cloneus.data.users import UserIndex

logger = logging.getLogger(__name__)

# 3: meta.json records the size of each file of the entry, so damage is detected.
FORMAT_VERSION = 3
HASH_BLOCK_BYTES = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """Hash of what decides token ids: the vocabulary (added tokens included) and the chat template."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    parts = [type(tokenizer).__name__, vocab, tokenizer.chat_template or "", str(tokenizer.eos_token)]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def cache_key(cfg: CloneusConfig, chat_digest: str, users: UserIndex, tokenizer: Any, youtube_on: bool) -> str:
    """Everything the prepared data depends on, hashed. Paths and the cache dir itself are left out."""
    data = cfg.dataset.model_dump(mode="json", exclude={"cache_dir", "chatlog", "users_json"})
    parts = {
        "version": FORMAT_VERSION,
        "chat": chat_digest,
        "users": users.model_dump(mode="json"),
        "dataset": data,
        "format": cfg.format.model_dump(mode="json"),
        "prompt": cfg.prompt.model_dump(mode="json"),
        "chunk_size": cfg.training.chunk_size,
        "youtube": cfg.youtube.tag_format if youtube_on else None,
        "tokenizer": tokenizer_digest(tokenizer),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:24]


def _file_sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def save_entry(entry: Path, train: Dataset, eval_ds: Dataset | None, meta: dict[str, Any]) -> None:
    """Write a cache entry into a temporary folder, then rename it into place in one step."""
    remove_orphaned_temp_dirs(entry.parent)
    tmp = entry.parent / f"{TMP_PREFIX}{entry.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    train.save_to_disk(str(tmp / "train"))
    if eval_ds is not None:
        eval_ds.save_to_disk(str(tmp / "eval"))
    atomic_write_json(tmp / "meta.json", {**meta, "files": _file_sizes(tmp)}, indent=0)
    try:
        os.replace(tmp, entry)
    except OSError:  # another process finished the same entry first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)


def _damage(entry: Path) -> tuple[str | None, dict[str, Any]]:
    """What is wrong with an entry's files (None when nothing), and its metadata."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"meta.json is unreadable ({type(e).__name__})", {}
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        return "meta.json lists no files", {}
    for name, size in meta["files"].items():
        path = entry / name
        if not path.is_file():
            return f"{name} is missing", meta
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} were written", meta
    return None, meta


def discard_entry(entry: Path, why: str) -> None:
    """Remove a damaged entry so it is rebuilt: renamed aside first, so no reader ever sees it half deleted."""
    logger.warning("dataset cache entry %s is damaged (%s); rebuilding it", entry, why)
    aside = entry.parent / f"{TMP_PREFIX}damaged-{entry.name}-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(entry, aside)
    shutil.rmtree(aside, ignore_errors=True)


def load_entry(entry: Path) -> tuple[Dataset, Dataset | None, dict[str, Any]] | None:
    """The train and eval datasets (memory-mapped) and metadata of an entry, or None when there is none.

    A damaged entry is logged, removed and reported as missing, so the caller rebuilds it.
    """
    from datasets import load_from_disk

    if not entry.is_dir():
        return None
    why, meta = _damage(entry)
    if why is None:
        try:
            eval_ds = load_from_disk(str(entry / "eval")) if (entry / "eval").is_dir() else None
            return load_from_disk(str(entry / "train")), eval_ds, meta
        except (OSError, ValueError, json.JSONDecodeError) as e:
            why = f"{type(e).__name__}: {e}"
    discard_entry(entry, why)
    return None
