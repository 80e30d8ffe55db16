"""training.eval_max_conversations: the in-training eval scores at most that many held-out conversations."""

from __future__ import annotations

from transformers import AutoTokenizer

from cloneus.training.trainer import _datasets, distributed_state, load_users

from .conftest import tiny_config


def eval_rows(tiny_model_dir, chat_csv, tmp_path, limit):
    cfg = tiny_config(tiny_model_dir, tmp_path, eval_max_conversations=limit, packing=False)
    cfg.dataset.eval_frac = 0.4
    cfg.dataset.chatlog = str(chat_csv)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    _, eval_set, _ = _datasets(cfg, tokenizer, load_users(cfg, chat_csv), distributed_state())
    return eval_set


def test_eval_is_bounded_to_the_earliest_conversations(tiny_model_dir, chat_csv, tmp_path):
    everything = eval_rows(tiny_model_dir, chat_csv, tmp_path, None)
    bounded = eval_rows(tiny_model_dir, chat_csv, tmp_path, 2)
    assert len(everything) > 2 and len(bounded) == 2
    assert bounded["input_ids"] == everything["input_ids"][:2]
