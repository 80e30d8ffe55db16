"""Shared helpers of the hostile-input suite: run a bad input the way a user would, then check what it left.

Every case goes through `run_prepare` (read, clean, `index build`, `prepare`): the only acceptable failure is a
`CloneusError` (the CLI prints those as one line; anything else is a traceback, so it escapes and fails the test).
`assert_no_partial_files` then checks the working folder: a `users.json` or a dataset cache entry is either
absent or whole, and no temporary file or folder is left behind.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloneus.errors import CloneusError

SHARED_DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
DEMO_CHAT = Path(__file__).parents[2] / "data" / "demo" / "demo_chat.json"


@dataclass
class Outcome:
    """What one hostile input led to: a prepared dataset, or the error a user would see.

    Args:
        error (`CloneusError`, *optional*): the error raised, if any.
        stats (`dict`): `PreparedData.stats` on success (`dropped` holds the counted drop reasons).
        frame (`pd.DataFrame`, *optional*): the cleaned messages, when reading and cleaning succeeded.
    """

    error: CloneusError | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    frame: Any = None

    @property
    def dropped(self) -> dict[str, int]:
        return self.stats.get("dropped", {})


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def prepare(tmp_path, tiny_model_dir, tiny_tokenizer) -> Callable[..., Outcome]:
    """`prepare(chat, **dataset_keys)`: `run_prepare` in a fresh working folder under `tmp_path`."""
    counter = itertools.count()

    def run(chat: Path, **dataset: Any) -> Outcome:
        return run_prepare(chat, tmp_path / f"work-{next(counter)}", tiny_model_dir, tiny_tokenizer, **dataset)

    return run


def write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = ("username", "text", "timestamp")):
    """A CSV with `header` and `rows`, written by the csv module (so quoting is right); returns `path`."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def hostile_config(work: Path, model_dir: Path, **dataset: Any):
    """A config whose user index and cache live under `work`, with YouTube off and every user trained."""
    from cloneus.config import config_from_dict

    tree = {
        "model": {"model_id": str(model_dir)},
        "dataset": {
            "users_json": str(work / "users.json"),
            "cache_dir": str(work / "cache"),
            "min_share": 0.0,
            "eval_frac": 0.0,
            **dataset,
        },
        "training": {"chunk_size": 512},
        "youtube": {"enabled": "off"},
    }
    return config_from_dict(tree)


def run_prepare(chat: Path, work: Path, model_dir: Path, tokenizer: Any, **dataset: Any) -> Outcome:
    """`index build` then `prepare` on `chat`, as the CLI runs them; a `CloneusError` is returned, not raised."""
    from cloneus.data.clean import clean_messages
    from cloneus.data.dataset import prepare_dataset
    from cloneus.data.readers import read_chat
    from cloneus.data.users import UserIndex

    outcome = Outcome()
    try:
        cfg = hostile_config(work, model_dir, **dataset)
        result = clean_messages(read_chat(chat, date_format=cfg.dataset.date_format), cfg.dataset.cleaning)
        outcome.frame = result.frame
        UserIndex.build(result.frame, cfg.dataset.min_share).save(cfg.dataset.users_json)
        outcome.stats = prepare_dataset(cfg, tokenizer, chat).stats
    except CloneusError as e:
        outcome.error = e
    assert_no_partial_files(work, failed=outcome.error is not None)
    return outcome


def assert_no_partial_files(work: Path, *, failed: bool) -> None:
    """No temporary files, a `users.json` that parses, and cache entries that are complete (none after a failure)."""
    from cloneus.data.dataset_cache import load_entry
    from cloneus.data.users import UserIndex

    leftovers = [p for p in work.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    users = work / "users.json"
    if users.exists():
        json.loads(users.read_text(encoding="utf-8"))
        UserIndex.load(users)
    cache = work / "cache"
    entries = [p for p in cache.iterdir()] if cache.is_dir() else []
    if failed:
        assert not entries, f"a failed prepare left cache entries: {entries}"
    for entry in entries:
        assert load_entry(entry) is not None, f"incomplete cache entry {entry}"


def expect_error(outcome: Outcome, *words: str) -> str:
    """The error message, after checking there was one and that it names each of `words` (case-insensitive)."""
    assert outcome.error is not None, f"expected an error naming {words}, got a result (dropped {outcome.dropped})"
    message = str(outcome.error)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in error: {message}"
    return message


def dce_message(i: int, author: str, text: Any, timestamp: Any, **extra: Any) -> dict[str, Any]:
    """One DiscordChatExporter message; `author` names a user whose id is derived from the name."""
    user = {"id": str(1000 + sum(map(ord, author))), "name": author, "nickname": author, "isBot": False}
    return {"id": str(5000 + i), "type": "Default", "timestamp": timestamp, "content": text, "author": user, **extra}


def write_dce_json(path: Path, messages: list[Any]) -> Path:
    """A DiscordChatExporter JSON export holding `messages` (dicts, or anything else for wrong-kind cases)."""
    export = {
        "guild": {"id": "1", "name": "Hostile Guild"},
        "channel": {"id": "2", "name": "general"},
        "messages": messages,
    }
    path.write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")
    return path


def telegram_message(i: int, author: str, text: Any, date: str, **extra: Any) -> dict[str, Any]:
    """One Telegram Desktop message (`date` is local time without a zone, as Telegram writes it)."""
    return {
        "id": i,
        "type": "message",
        "date": date,
        "from": author,
        "from_id": f"user{sum(map(ord, author))}",
        "text": text,
        **extra,
    }


def write_telegram(path: Path, messages: list[Any]) -> Path:
    """A single-chat Telegram Desktop `result.json`."""
    export = {"name": "Hostile Chat", "type": "private_group", "id": 7, "messages": messages}
    path.write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")
    return path


def minutes_apart(count: int, start: str = "2023-05-01T10:00:00+00:00", step: int = 3) -> list[str]:
    """ISO timestamps `step` minutes apart, for exports that need plausible times."""
    import pandas as pd

    return [(pd.Timestamp(start) + pd.Timedelta(minutes=step * i)).isoformat() for i in range(count)]
