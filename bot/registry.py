"""The checkpoints the bot may serve, as listed in `config/models.json`.

Layout: `{"default": "<name>", "models": [{"name", "desc", "ckpt", ...extra fields such as metrics}]}`. The old
CloneUs server's layout is read too: lists `BEST` and `MICRO` of `{"name", "desc", "ckpt"}` and `ERA` of
`{"years", "gconf", "ckpt"}` (named `era-<years>`); each entry keeps its list as `group`, and the last `BEST` entry
is the default, as the old server had it. `register` rewrites the file in the new layout. The bot only
ever loads a checkpoint by registered name, so a Discord user can never make it open an arbitrary path.
Relative `ckpt` paths are relative to the directory the bot runs from. Writes are atomic.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloneus.errors import CloneusError
from cloneus.io import atomic_write_json

logger = logging.getLogger(__name__)

# The old server's models.json lists, in default-picking order.
LEGACY_LISTS = ("BEST", "MICRO", "ERA")


class ModelEntry(BaseModel):
    """One servable checkpoint."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, description="What users type in /model switch.")
    desc: str = Field("", description="A short description shown in /model list.")
    ckpt: str = Field(min_length=1, description="The checkpoint directory (loads with Cloneus.from_pretrained).")
    metrics: dict[str, Any] | None = Field(None, description="Eval metrics from training, e.g. eval_perplexity.")
    eval: dict[str, Any] | None = Field(None, description="The latest `cloneus eval` summary (see /admin eval).")

    @property
    def path(self) -> Path:
        return Path(self.ckpt).expanduser()


class ModelRegistry:
    """`models.json`, read once and rewritten atomically on `register`.

    Args:
        path (`str | Path`): the models.json file. A missing file is an empty registry.

    Raises:
        `CloneusError`: the file exists but is not valid JSON in either layout (names the file and the entry).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries, self._default = self._read()

    def _read(self) -> tuple[list[ModelEntry], str | None]:
        if not self.path.exists():
            logger.info("%s does not exist; no models registered yet", self.path)
            return [], None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CloneusError(f"{self.path}, line {e.lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(raw, dict):
            raise CloneusError(f"{self.path}: expected an object with a 'models' list (or the old 'BEST' list)")
        if "models" in raw or not any(key in raw for key in LEGACY_LISTS):
            entries = self._entries_of(raw, "models")
            default = raw.get("default") or (entries[0].name if entries else None)
        else:
            entries, default = self._legacy_entries(raw)
        if default is not None and default not in {e.name for e in entries}:
            raise CloneusError(f"{self.path}: default {default!r} is not the name of any registered entry")
        return entries, default

    def _entries_of(self, raw: dict[str, Any], key: str, group: str | None = None) -> list[ModelEntry]:
        items = raw.get(key, [])
        if not isinstance(items, list):
            raise CloneusError(f"{self.path}: '{key}' must be a list of {{name, desc, ckpt}} objects")
        entries = []
        for i, item in enumerate(items):
            if group == "ERA" and isinstance(item, dict) and "name" not in item and item.get("years"):
                item = {"name": f"era-{item['years']}", "desc": f"trained on {item['years']}", **item}
            if group is not None and isinstance(item, dict):
                item = {**item, "group": group}
            try:
                entries.append(ModelEntry.model_validate(item))
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "entry"
                raise CloneusError(f"{self.path}: {key}[{i}].{where}: {first['msg']}") from e
        return entries

    def _legacy_entries(self, raw: dict[str, Any]) -> tuple[list[ModelEntry], str | None]:
        """The old server's lists; the default is the last BEST entry (else the last of MICRO, then ERA)."""
        entries, default, seen = [], None, {}
        for key in LEGACY_LISTS:
            group = self._entries_of(raw, key, group=key)
            for entry in group:
                if entry.name in seen:
                    raise CloneusError(
                        f"{self.path}: {key} entry {entry.name!r} has the name of a {seen[entry.name]} entry"
                    )
                seen[entry.name] = key
            entries += group
            if default is None and group:
                default = group[-1].name
        return entries, raw.get("default") or default

    @property
    def entries(self) -> list[ModelEntry]:
        return list(self._entries)

    @property
    def default(self) -> ModelEntry | None:
        return self.get(self._default) if self._default else None

    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def get(self, name: str) -> ModelEntry | None:
        """The entry registered as `name`, or None."""
        return next((e for e in self._entries if e.name == name), None)

    def register(
        self, name: str, desc: str, ckpt: str | Path, metrics: dict[str, Any] | None = None, *, make_default=False
    ) -> ModelEntry:
        """Add (or replace) the entry `name` and rewrite the file atomically.

        Args:
            name (`str`): the registered name; an existing entry with this name is replaced.
            desc (`str`): shown in /model list.
            ckpt (`str | Path`): the checkpoint directory.
            metrics (`dict`, *optional*): eval metrics from `metrics.json`.
            make_default (`bool`, *optional*, defaults to `False`): also make it the default (the first entry
                registered always becomes the default).
        """
        entry = ModelEntry(name=name, desc=desc, ckpt=str(ckpt), metrics=metrics)
        with self._lock:
            entries = [e for e in self._entries if e.name != name] + [entry]
            default = name if make_default or self._default is None else self._default
            self._write(entries, default)
        logger.info("registered model %r -> %s", name, ckpt)
        return entry

    def record_eval(self, name: str, summary: dict[str, Any]) -> ModelEntry:
        """Keep `summary` (the eval's headline figures) on the entry `name`, replacing any earlier one.

        Raises:
            `CloneusError`: no entry is registered as `name` (it may have been removed while the eval ran).
        """
        with self._lock:
            old = next((e for e in self._entries if e.name == name), None)
            if old is None:
                raise CloneusError(f"no model registered as {name!r}; the eval's figures were not recorded")
            entry = old.model_copy(update={"eval": summary})
            self._write([entry if e is old else e for e in self._entries], self._default)
        logger.info("recorded eval figures of model %r", name)
        return entry

    def _write(self, entries: list[ModelEntry], default: str | None) -> None:
        """Rewrite models.json atomically, then adopt the new state (the caller holds the lock)."""
        atomic_write_json(
            self.path, {"default": default, "models": [e.model_dump(exclude_none=True) for e in entries]}
        )
        self._entries, self._default = entries, default
