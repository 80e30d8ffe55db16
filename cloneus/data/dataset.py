"""Chat export → tokenized, loss-masked train/eval datasets (contract 5), cached on disk.

`prepare_dataset` runs the whole data pipeline: read, normalise (`cloneus.data.normalize`, the path serving
shares: clean, drop opted-out/excluded users and bots, YouTube link tags, special tokens), sessions per
`hours_between_sessions` cutoff, chunks of at most `chunk_size` tokens, and labels.
The result is cached under `dataset.cache_dir` (`cloneus.data.dataset_cache` says what the key covers), so `train`
after `prepare`, or a second run, loads it instead of rebuilding it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError, ConfigError, DataFormatError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from datasets import Dataset

    from cloneus.config import CloneusConfig
    from cloneus.data.chunks import Chunks
    from cloneus.data.formatting import ChatFormatter
    from cloneus.data.users import UserIndex

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """What `prepare_dataset` returns.

    Args:
        train (`Dataset`): columns `input_ids`, `labels` (-100 where no loss) and `length`.
        eval (`Dataset`, *optional*): the same for the held-out latest sessions; None when `eval_frac` is 0 or
            there is a single session.
        eval_conversations (`list[list[tuple[str, str]]]`): the eval chunks as `(author, text)` messages (first
            cutoff only), for the eval command.
        stats (`dict`): counts for `prepare` to print: messages, dropped per reason, users, sessions, chunks,
            tokens.
        tokens_added (`list[str]`): special tokens added to the tokenizer (`custom_chat_template: chatml`); the
            trainer must resize the model's embeddings when this is not empty.
        cache_path (`Path`, *optional*): the cache entry this came from or was saved to.
    """

    train: Dataset
    eval: Dataset | None
    eval_conversations: list[list[tuple[str, str]]]
    stats: dict[str, Any]
    tokens_added: list[str] = field(default_factory=list)
    cache_path: Path | None = None


def _load_users(cfg: CloneusConfig, frame_loader) -> UserIndex:
    from cloneus.data.users import UserIndex

    path = Path(cfg.dataset.users_json)
    existing = UserIndex.load(path) if path.is_file() else None
    if existing is not None and not existing.needs_counts:
        return existing
    if existing is None:
        logger.info(
            "no user index at %s; using one built from the chat (run `python -m cloneus index build` to edit it)", path
        )
    return UserIndex.build(frame_loader(), min_share=cfg.dataset.min_share, existing=existing)


def _too_long_reporter(frame: pd.DataFrame, path: Path, cfg: CloneusConfig, n_prefix: int):
    """The `TooLong` callback for `dataset.long_messages`: True keeps the message cut to fit, False drops it."""
    mode = cfg.dataset.long_messages
    chunk_size = cfg.training.chunk_size

    def report(index: int, tokens: int) -> bool:
        row = frame.iloc[index]
        where = f"message {row['message_id']} by {row['author']!r} is {tokens} tokens"
        if mode == "error":
            raise DataFormatError(
                path,
                f"{where} (plus a {n_prefix}-token system prompt), over training.chunk_size={chunk_size}; raise "
                "chunk_size, shorten the message, or set dataset.long_messages: truncate (or drop)",
                field="text",
            )
        # One summary warning per run comes from the counts in the stats; per message is detail.
        logger.debug("%s, over chunk_size=%d: %s", where, chunk_size, "truncated" if mode == "truncate" else "dropped")
        return mode == "truncate"

    return report


def _build_chunks(
    formatter: ChatFormatter,
    frame: pd.DataFrame,
    gaps: np.ndarray | None,
    splits: list[list[tuple[int, int]]],
    cfg: CloneusConfig,
    path: Path,
) -> list[Chunks]:
    """Tokenize and cut each split's sessions (all cutoffs together; identical chunks are kept once)."""
    from cloneus.data.chunks import tokenize_sessions
    from cloneus.data.sessions import split_long
    from cloneus.data.turn_tokens import MessageTokens, tokenize_flat, turns_are_separable

    authors = frame["author"].tolist()
    texts = frame["text"].tolist()
    chunk_size = cfg.training.chunk_size
    n_prefix = len(tokenize_flat(formatter.tokenizer, [formatter.prefix])[0]) if formatter.prefix else 0
    if n_prefix >= chunk_size:
        raise ConfigError(
            f"the system prompt alone is {n_prefix} tokens, not under training.chunk_size={chunk_size}; shorten "
            "prompt.template or raise chunk_size"
        )
    too_long = _too_long_reporter(frame, path, cfg, n_prefix)
    if not turns_are_separable(formatter, sorted(set(authors))):
        logger.info("tokenizing whole sessions (turns do not start with a special token)")
        return [
            tokenize_sessions(formatter, authors, texts, gaps, sessions, chunk_size, too_long) for sessions in splits
        ]
    tokens = MessageTokens.build(formatter, authors, texts)
    budget = chunk_size - len(tokens.prefix_ids)
    return [
        tokens.chunk(
            sorted({r for a, b in sessions for r in split_long(tokens.counts, gaps, a, b, budget)}), budget, too_long
        )
        for sessions in splits
    ]


def _to_dataset(chunks: Chunks) -> Dataset:
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    offsets = pa.array(chunks.offsets.astype(np.int32))
    table = pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(offsets, pa.array(chunks.ids)),
            "labels": pa.ListArray.from_arrays(offsets, pa.array(chunks.labels)),
            "length": pa.array(chunks.lengths.astype(np.int64)),
        }
    )
    return Dataset(InMemoryTable(table))


def _count_tokens(chunks: Chunks) -> dict[str, int]:
    return {"total": int(len(chunks.ids)), "labelled": int((chunks.labels != -100).sum())}


class _Timer:
    """Seconds spent per pipeline stage, reported in `stats["seconds"]` (the data benchmark reads them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self._last, 3)
        self._last = now


def _filter_messages(
    frame: pd.DataFrame, cfg: CloneusConfig, users: UserIndex, tokenizer: Any, links: Any, dropped: dict[str, int]
) -> pd.DataFrame:
    """Steps after cleaning that depend on the user index, the tokenizer and YouTube (`MessageNormalizer.filter`)."""
    from cloneus.data.normalize import MessageNormalizer

    return MessageNormalizer(cfg.dataset, users, tokenizer, links).filter(frame, dropped)


def _group_sessions(gaps: np.ndarray | None, n: int, cfg: CloneusConfig) -> tuple[int, dict, dict]:
    """The eval split index and, per cutoff, the train and eval sessions."""
    from cloneus.data.sessions import eval_split_index, session_ranges

    hours = cfg.dataset.hours_between_sessions
    cutoffs = sorted(set(hours if isinstance(hours, list) else [hours]))
    min_len = cfg.dataset.min_session_length
    # The split is taken on the coarsest grouping; each part is then grouped on its own, so no session crosses it.
    split = eval_split_index(session_ranges(gaps, 0, n, cutoffs[-1], min_len), cfg.dataset.eval_frac)
    train = {h: session_ranges(gaps, 0, split, h, min_len) for h in cutoffs}
    held_out = {h: session_ranges(gaps, split, n, h, min_len) for h in cutoffs}
    return split, train, held_out


def _check_inputs(cfg: CloneusConfig, tokenizer: Any, chatlog: str | Path | None) -> Path:
    source = chatlog or cfg.dataset.chatlog
    if source is None:
        raise ConfigError("dataset.chatlog is not set; pass -d FILE or set dataset.chatlog in the config")
    path = Path(source)
    if not path.is_file():
        raise CloneusError(f"{path}: chat export not found")
    if not tokenizer.is_fast:
        raise ConfigError(
            f"model.model_id {cfg.model.model_id!r}: its tokenizer has no fast (Rust) version, which dataset "
            "preparation needs for token offsets; install `tokenizers` support for it or pick another model"
        )
    return path


def _split_stats(train_groups: dict, eval_groups: dict, train_chunks: Chunks, eval_chunks: Chunks) -> dict:
    return {
        "sessions": {f"{h:g}h": {"train": len(train_groups[h]), "eval": len(eval_groups[h])} for h in train_groups},
        "chunks": {"train": len(train_chunks.ranges), "eval": len(eval_chunks.ranges)},
        "truncated_messages": train_chunks.truncated + eval_chunks.truncated,
        "long_messages": {
            "truncated": train_chunks.truncated + eval_chunks.truncated,
            "dropped": train_chunks.too_long_dropped + eval_chunks.too_long_dropped,
        },
        "tokens": {"train": _count_tokens(train_chunks), "eval": _count_tokens(eval_chunks)},
    }


def prepare_dataset(
    cfg: CloneusConfig,
    tokenizer: Any,
    chatlog: str | Path | None = None,
    users: UserIndex | None = None,
) -> PreparedData:
    """Build (or load from cache) the tokenized train/eval datasets for a config.

    Args:
        cfg (`CloneusConfig`): `dataset`, `format`, `prompt`, `training.chunk_size` and `youtube` are used.
        tokenizer (`PreTrainedTokenizerBase`): a fast tokenizer; `format.custom_chat_template` is installed on it.
        chatlog (`str | Path`, *optional*): the chat export; defaults to `dataset.chatlog`.
        users (`UserIndex`, *optional*): defaults to `dataset.users_json`, or one built from the chat when that
            file does not exist.

    Raises:
        ConfigError: no chat log given, a format/prompt setting that cannot work with this tokenizer, a
            `chunk_size` above the model's context, or a user index that trains nobody.
        DataFormatError: the export cannot be read, or one message is longer than `chunk_size` without
            `dataset.long_messages: error`.
    """
    from cloneus.data.dataset_cache import cache_key, file_digest, load_entry, save_entry
    from cloneus.data.formatting import ChatFormatter
    from cloneus.data.normalize import clean
    from cloneus.data.preflight import check_model_fit, check_trainable_users
    from cloneus.data.readers import read_chat
    from cloneus.data.sessions import silence_hours
    from cloneus.plugins.youtube import YouTubeLinks

    path = _check_inputs(cfg, tokenizer, chatlog)
    check_model_fit(cfg, tokenizer)
    timer, cleaned = _Timer(), []

    def load_clean():
        if not cleaned:
            raw = read_chat(path, date_format=cfg.dataset.date_format)
            timer.lap("read")
            cleaned.append(clean(raw, cfg.dataset))
            timer.lap("clean")
        return cleaned[0]

    users = users if users is not None else _load_users(cfg, lambda: load_clean().frame)
    check_trainable_users(users, f"the user index for {path}")
    formatter = ChatFormatter(tokenizer, cfg.format, cfg.prompt, users, masked_authors=cfg.dataset.masked_authors)
    links = YouTubeLinks.from_env(cfg.youtube)
    entry = Path(cfg.dataset.cache_dir) / cache_key(cfg, file_digest(path), users, tokenizer, links is not None)
    cached = load_entry(entry)
    if cached is not None:
        logger.info("using the prepared dataset cached in %s", entry)
        if links is not None:
            links.close()
        train, eval_ds, meta = cached
        conversations = [[(a, t) for a, t in conv] for conv in meta["eval_conversations"]]
        stats = {**meta["stats"], "cached": True}
        return PreparedData(train, eval_ds, conversations, stats, formatter.tokens_added, entry)
    timer.lap("setup")

    result = load_clean()
    dropped = dict(result.dropped)
    try:
        frame = _filter_messages(result.frame, cfg, users, tokenizer, links, dropped)
    finally:
        if links is not None:
            links.close()
    del result
    cleaned.clear()  # the unfiltered frame can go: a million messages hold a few hundred MB
    if frame.empty:
        raise DataFormatError(path, f"no messages left after cleaning (dropped: {dropped})")
    timer.lap("filter")
    gaps = silence_hours(frame["timestamp"])
    if gaps is None:
        logger.info("the chat has no timestamps: conversations are cut by token budget only")
    split, train_groups, eval_groups = _group_sessions(gaps, len(frame), cfg)
    splits = [sorted({s for g in groups.values() for s in g}) for groups in (train_groups, eval_groups)]
    timer.lap("sessions")
    train_chunks, eval_chunks = _build_chunks(formatter, frame, gaps, splits, cfg, path)
    timer.lap("format_tokenize")

    authors, texts = frame["author"].tolist(), frame["text"].tolist()
    stats = {
        "chat": str(path),
        "messages_kept": len(frame),
        "dropped": dropped,
        "users": {"in_index": len(users.users), "trainable": len(users.trainable()), "in_chat": len(set(authors))},
        "timestamps": gaps is not None,
        **_split_stats(train_groups, eval_groups, train_chunks, eval_chunks),
        "eval_messages": len(frame) - split,
        "cached": False,
        "seconds": timer.seconds,
    }
    prepared = PreparedData(
        train=_to_dataset(train_chunks),
        eval=_to_dataset(eval_chunks) if eval_chunks.ranges else None,
        eval_conversations=[list(zip(authors[a:b], texts[a:b], strict=True)) for a, b in eval_chunks.ranges],
        stats=stats,
        tokens_added=formatter.tokens_added,
        cache_path=entry,
    )
    entry.parent.mkdir(parents=True, exist_ok=True)
    meta = {"stats": stats, "eval_conversations": prepared.eval_conversations}
    save_entry(entry, prepared.train, prepared.eval, meta)
    timer.lap("save")
    return prepared


def split_messages(
    cfg: CloneusConfig, tokenizer: Any, chatlog: str | Path | None = None, users: UserIndex | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The cleaned `(author, text)` messages before and after the eval split, as `prepare_dataset` cuts them.

    The eval suite fits its author classifier on the train side and checks copying against it; it needs the
    messages themselves, which the tokenized cache does not keep. Same steps as `prepare_dataset` up to the split,
    without tokenizing.
    """
    from cloneus.data.normalize import clean
    from cloneus.data.readers import read_chat
    from cloneus.data.sessions import silence_hours
    from cloneus.plugins.youtube import YouTubeLinks

    path = _check_inputs(cfg, tokenizer, chatlog)
    frame = clean(read_chat(path, date_format=cfg.dataset.date_format), cfg.dataset).frame
    users = users if users is not None else _load_users(cfg, lambda: frame)
    links = YouTubeLinks.from_env(cfg.youtube)
    try:
        frame = _filter_messages(frame, cfg, users, tokenizer, links, {})
    finally:
        if links is not None:
            links.close()
    split, _, _ = _group_sessions(silence_hours(frame["timestamp"]), len(frame), cfg)
    messages = list(zip(frame["author"].tolist(), frame["text"].tolist(), strict=True))
    return messages[:split], messages[split:]
