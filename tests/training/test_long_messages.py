"""A message longer than chunk_size no longer stops training: it is truncated, and train says so once."""

from __future__ import annotations

import csv
import logging

from cloneus.training.trainer import train

from .conftest import tiny_config, write_chat


def test_long_messages_are_truncated_with_one_warning(tiny_model_dir, tmp_path, caplog):
    chat = write_chat(tmp_path / "chat.csv")
    rows = list(csv.reader(chat.open(encoding="utf-8")))
    rows[5][1] = "a pasted log line " * 200
    rows[30][1] = "more pasted code " * 200
    with chat.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    cfg = tiny_config(tiny_model_dir, tmp_path, max_steps=1, save_steps=1)
    with caplog.at_level(logging.WARNING):
        result = train(cfg, chatlog=chat, run_name="long")
    assert result.checkpoint is not None
    warnings = [r.getMessage() for r in caplog.records if "longer than training.chunk_size" in r.getMessage()]
    assert warnings == ["2 messages longer than training.chunk_size=256 were truncated (dataset.long_messages: "
                        "truncate); `python -m cloneus prepare` shows the counts"]  # fmt: skip
