"""prepare_dataset and the chunk builders: labels, splitting, eval split, cache, CLI."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from cloneus.cli import main as cli_main
from cloneus.config import config_from_dict
from cloneus.data.chunks import IGNORE_INDEX, tokenize_sessions
from cloneus.data.dataset import prepare_dataset
from cloneus.data.formatting import ChatFormatter
from cloneus.data.sessions import session_ranges, silence_hours, split_long
from cloneus.data.turn_tokens import MessageTokens, turns_are_separable
from cloneus.data.users import User, UserIndex
from cloneus.errors import ConfigError, DataFormatError

WORDS = ["hello", "there", "pizza", "on", "friday", "debugging", "segfault", "lol", "game", "night", "yeah"]
AUTHORS = ["alice", "bob", "carol", "dave"]


def write_chat(path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    """A generic `username,text[,timestamp]` CSV; timestamps None writes the two-column form."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        with_time = rows[0][2] is not None
        writer.writerow(["username", "text", "timestamp"] if with_time else ["username", "text"])
        for author, text, stamp in rows:
            writer.writerow([author, text, stamp] if with_time else [author, text])
    return path


def chat_rows(sessions: list[int], *, gap_hours: float = 6.0, seed: int = 0) -> list[tuple[str, str, str]]:
    """Sessions of the given sizes, `gap_hours` apart; consecutive authors differ so no burst merges them."""
    rng = np.random.default_rng(seed)
    rows, t = [], pd.Timestamp("2024-03-01", tz="UTC")
    for size in sessions:
        for _ in range(size):
            author = AUTHORS[len(rows) % len(AUTHORS)]
            words = rng.choice(WORDS, size=int(rng.integers(2, 9)))
            rows.append((author, f"{' '.join(words)} #{len(rows)}", t.isoformat()))
            t += pd.Timedelta(minutes=int(rng.integers(1, 30)))
        t += pd.Timedelta(hours=gap_hours)
    return rows


def make_cfg(tmp_path: Path, model_dir: Path, **sections) -> object:
    tree = {
        "model": {"model_id": str(model_dir)},
        "dataset": {
            "users_json": str(tmp_path / "users.json"),
            "cache_dir": str(tmp_path / "cache"),
            "min_share": 0.0,
            "merge_window_minutes": 0,
        },
        "youtube": {"enabled": "off"},
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return config_from_dict(tree)


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def rows_of(ds) -> list[tuple[list[int], list[int]]]:
    return [(r["input_ids"], r["labels"]) for r in ds]


class TestPrepareDataset:
    def test_rows_are_tokenized_conversations_with_labels_from_spans(self, tmp_path, tiny_model_dir, tokenizer):
        chat = write_chat(tmp_path / "chat.csv", chat_rows([5, 6, 4, 7]))
        cfg = make_cfg(tmp_path, tiny_model_dir, dataset={"eval_frac": 0.0, "masked_authors": ["bob"]})
        data = prepare_dataset(cfg, tokenizer, chat, users=_users())
        assert data.eval is None and data.train.column_names == ["input_ids", "labels", "length"]
        assert len(data.train) == 4 and data.stats["sessions"]["4h"] == {"train": 4, "eval": 0}
        frame = pd.read_csv(chat, keep_default_na=False)
        fmt = ChatFormatter(tokenizer, cfg.format, cfg.prompt, _users(), masked_authors=["bob"])
        bounds = np.cumsum([0, 5, 6, 4, 7])
        for row, a, b in zip(data.train, bounds[:-1], bounds[1:], strict=True):
            msgs = list(zip(frame.username[a:b], frame.text[a:b], strict=True))
            rendered = fmt.render(msgs)
            assert row["input_ids"] == tokenizer(rendered.text, add_special_tokens=False).input_ids
            assert row["length"] == len(row["input_ids"])
            kept = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE_INDEX]
            assert tokenizer.decode(kept) == "".join(rendered.text[s:e] for s, e in rendered.label_spans)
            assert "bob\n" not in tokenizer.decode(kept) and "<|im_start|>system" not in tokenizer.decode(kept)

    def test_long_session_is_split_and_each_part_repeats_the_system_prompt(self, tmp_path, tiny_model_dir, tokenizer):
        rows = chat_rows([30], seed=3)
        # 3 hours between messages 11 and 12: the longest silence, still inside one 4-hour session
        rows[12:] = [(a, t, (pd.Timestamp(s) + pd.Timedelta(hours=3)).isoformat()) for a, t, s in rows[12:]]
        chat = write_chat(tmp_path / "chat.csv", rows)
        cfg = make_cfg(tmp_path, tiny_model_dir, dataset={"eval_frac": 0.0}, training={"chunk_size": 400})
        data = prepare_dataset(cfg, tokenizer, chat)
        prefix = tokenizer("<|im_start|>system\n", add_special_tokens=False).input_ids
        assert len(data.train) >= 2
        texts = [tokenizer.decode(r["input_ids"]) for r in data.train]
        assert all(r["length"] <= 400 and r["input_ids"][: len(prefix)] == prefix for r in data.train)
        assert texts[0].rstrip().endswith("#11<|im_end|>") and "#12" in texts[1]  # cut at the longest silence

    def test_single_message_over_chunk_size_is_truncated_by_default(self, tmp_path, tiny_model_dir, tokenizer):
        rows = chat_rows([4])
        rows[2] = (rows[2][0], "word " * 400, rows[2][2])
        chat = write_chat(tmp_path / "chat.csv", rows)
        data = prepare_dataset(make_cfg(tmp_path, tiny_model_dir, training={"chunk_size": 128}), tokenizer, chat)
        assert data.stats["long_messages"] == {"truncated": 1, "dropped": 0}
        assert data.stats["truncated_messages"] == 1 and max(data.train["length"]) == 128
        assert "word word" in "".join(tokenizer.decode(r["input_ids"]) for r in data.train)

    def test_long_messages_error_names_the_message(self, tmp_path, tiny_model_dir, tokenizer):
        rows = chat_rows([4])
        rows[2] = (rows[2][0], "word " * 400, rows[2][2])
        chat = write_chat(tmp_path / "chat.csv", rows)
        cfg = make_cfg(tmp_path, tiny_model_dir, training={"chunk_size": 128}, dataset={"long_messages": "error"})
        with pytest.raises(DataFormatError, match=r"message 2 by 'carol' is \d+ tokens.*chunk_size=128"):
            prepare_dataset(cfg, tokenizer, chat)

    def test_long_messages_drop_leaves_only_that_message_out(self, tmp_path, tiny_model_dir, tokenizer):
        rows = chat_rows([4])
        rows[2] = (rows[2][0], "word " * 400, rows[2][2])
        chat = write_chat(tmp_path / "chat.csv", rows)
        cfg = make_cfg(tmp_path, tiny_model_dir, training={"chunk_size": 128}, dataset={"long_messages": "drop"})
        data = prepare_dataset(cfg, tokenizer, chat)
        assert data.stats["long_messages"] == {"truncated": 0, "dropped": 1}
        text = "".join(tokenizer.decode(r["input_ids"]) for r in data.train)
        assert "word word" not in text and all(t in text for i, (_, t, _) in enumerate(rows) if i != 2)

    def test_old_allow_truncation_still_works(self, tmp_path, tiny_model_dir, tokenizer):
        rows = chat_rows([4])
        rows[2] = (rows[2][0], "word " * 400, rows[2][2])
        chat = write_chat(tmp_path / "chat.csv", rows)
        cfg = make_cfg(tmp_path, tiny_model_dir, training={"chunk_size": 128}, dataset={"allow_truncation": False})
        assert cfg.dataset.long_messages == "error"
        with pytest.raises(DataFormatError, match="dataset.long_messages: truncate"):
            prepare_dataset(cfg, tokenizer, chat)

    def test_eval_split_takes_latest_sessions_without_overlap(self, tmp_path, tiny_model_dir, tokenizer):
        rows = chat_rows([4, 5, 4, 6, 5, 4, 5, 4, 6, 5])
        chat = write_chat(tmp_path / "chat.csv", rows)
        cfg = make_cfg(tmp_path, tiny_model_dir, dataset={"eval_frac": 0.2, "hours_between_sessions": [1, 4]})
        data = prepare_dataset(cfg, tokenizer, chat)
        held_out = [text for conv in data.eval_conversations for _, text in conv]
        assert held_out == [t for _, t, _ in rows[-11:]]  # the last two sessions, in order
        train_text = "".join(tokenizer.decode(r["input_ids"]) for r in data.train)
        assert all(t not in train_text for t in held_out)
        assert len(data.eval) == 2

    def test_identical_conversations_from_several_cutoffs_are_kept_once(self, tmp_path, tiny_model_dir, tokenizer):
        chat = write_chat(tmp_path / "chat.csv", chat_rows([4, 5, 6], gap_hours=8))
        cfg = make_cfg(tmp_path, tiny_model_dir, dataset={"eval_frac": 0.0, "hours_between_sessions": [2, 4, 48]})
        data = prepare_dataset(cfg, tokenizer, chat)
        assert data.stats["sessions"] == {
            "2h": {"train": 3, "eval": 0},
            "4h": {"train": 3, "eval": 0},
            "48h": {"train": 1, "eval": 0},
        }
        assert len(data.train) == 4

    def test_without_timestamps_chunks_by_token_budget(self, tmp_path, tiny_model_dir, tokenizer, caplog):
        rows = [(a, t, None) for a, t, _ in chat_rows([40])]
        chat = write_chat(tmp_path / "chat.csv", rows)
        cfg = make_cfg(tmp_path, tiny_model_dir, dataset={"eval_frac": 0.0}, training={"chunk_size": 300})
        with caplog.at_level(logging.INFO):
            data = prepare_dataset(cfg, tokenizer, chat)
        assert "no timestamps" in caplog.text
        assert len(data.train) > 1 and max(data.train["length"]) <= 300
        texts = "".join(tokenizer.decode(r["input_ids"]) for r in data.train)
        assert all(f"#{i}<" in texts for i in range(40))

    def test_opted_out_users_never_reach_the_data_and_other_tag_hides_context_users(
        self, tmp_path, tiny_model_dir, tokenizer
    ):
        rows = chat_rows([8, 8])
        chat = write_chat(tmp_path / "chat.csv", rows)
        users = UserIndex(
            users=[
                User(id=a, username=a, display_name=a, message_count=4, share=0.25, opted_out=a == "dave")
                for a in AUTHORS
            ],
            min_share=0.2,
        )
        users.users[2].message_count, users.users[2].share = 1, 0.01  # carol is context only
        users = UserIndex(users=users.users, min_share=0.2)
        cfg = make_cfg(tmp_path, tiny_model_dir, dataset={"eval_frac": 0.0, "other_tag": "someone"})
        data = prepare_dataset(cfg, tokenizer, chat, users=users)
        text = "".join(tokenizer.decode(r["input_ids"]) for r in data.train)
        assert "dave" not in text and data.stats["dropped"]["opted_out"] == 4
        assert "<|im_start|>someone\n" in text and "<|im_start|>carol" not in text
        labelled = [t for r in data.train for t, lab in zip(r["input_ids"], r["labels"], strict=True) if lab >= 0]
        assert "someone" not in tokenizer.decode(labelled)

    def test_cached_by_content_config_and_tokenizer(self, tmp_path, tiny_model_dir, tokenizer):
        chat = write_chat(tmp_path / "chat.csv", chat_rows([4, 5, 6]))
        cfg = make_cfg(tmp_path, tiny_model_dir)
        first = prepare_dataset(cfg, tokenizer, chat)
        again = prepare_dataset(cfg, tokenizer, chat)
        assert not first.stats["cached"] and again.stats["cached"] and again.cache_path == first.cache_path
        assert rows_of(again.train) == rows_of(first.train)
        assert again.eval_conversations == first.eval_conversations
        other = make_cfg(tmp_path, tiny_model_dir, training={"chunk_size": 256})
        assert prepare_dataset(other, tokenizer, chat).cache_path != first.cache_path
        write_chat(chat, chat_rows([4, 5, 6], seed=9))
        assert prepare_dataset(cfg, tokenizer, chat).cache_path != first.cache_path
        tokenizer.chat_template += "{# another template #}"
        assert prepare_dataset(cfg, tokenizer, chat).cache_path != first.cache_path

    def test_youtube_links_become_tags(self, tmp_path, tiny_model_dir, tokenizer, monkeypatch):
        from cloneus.plugins.youtube.cache import VideoCache

        monkeypatch.delenv("YOUTUBE_API_KEY", raising=False)
        db = tmp_path / "yt.db"
        cache = VideoCache(db)
        cache.store_lookup({"dQw4w9WgXcQ": ("Never Gonna", "Rick")}, [])
        cache.close()
        rows = chat_rows([5])
        rows[1] = (rows[1][0], "look https://www.youtube.com/watch?v=dQw4w9WgXcQ", rows[1][2])
        chat = write_chat(tmp_path / "chat.csv", rows)
        cfg = make_cfg(tmp_path, tiny_model_dir, youtube={"enabled": "auto", "db_path": str(db)})
        text = tokenizer.decode(prepare_dataset(cfg, tokenizer, chat).train[0]["input_ids"])
        assert '<youtube id="dQw4w9WgXcQ" title="Never Gonna" channel="Rick">' in text and "watch?v" not in text

    def test_chatml_tokens_added_are_reported(self, tmp_path, tiny_model_dir, tokenizer):
        chat = write_chat(tmp_path / "chat.csv", chat_rows([4, 4]))
        cfg = make_cfg(tmp_path, tiny_model_dir, format={"custom_chat_template": "chatml"})
        assert prepare_dataset(cfg, tokenizer, chat).tokens_added == []  # the tiny tokenizer already has them

    def test_missing_chatlog_is_a_config_error(self, tmp_path, tiny_model_dir, tokenizer):
        with pytest.raises(ConfigError, match="dataset.chatlog"):
            prepare_dataset(make_cfg(tmp_path, tiny_model_dir), tokenizer)


def _messages(draw_data) -> tuple[list[str], list[str], pd.Series]:
    authors = [AUTHORS[a] for a, _, _ in draw_data]
    texts = [" ".join(WORDS[w % len(WORDS)] for w in ws) for _, ws, _ in draw_data]
    minutes = np.cumsum([m for _, _, m in draw_data])
    stamps = pd.Series(pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(minutes, unit="min"))
    return authors, texts, stamps


def _users() -> UserIndex:
    return UserIndex(users=[User(id=a, username=a, display_name=a, message_count=1, share=0.25) for a in AUTHORS])


class TestChunkInvariants:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        data=st.lists(
            st.tuples(st.integers(0, 3), st.lists(st.integers(0, 50), min_size=0, max_size=25), st.integers(0, 400)),
            min_size=1,
            max_size=40,
        ),
        cutoffs=st.lists(st.sampled_from([0.5, 1.0, 3.0, 8.0]), min_size=1, max_size=3, unique=True),
        chunk_size=st.integers(40, 300),
        placement=st.sampled_from(["replace_role", "tag_only", "content_prefix"]),
    )
    def test_each_grouping_keeps_every_message_once_in_order_within_chunk_size(
        self, tokenizer, data, cutoffs, chunk_size, placement
    ):
        """Every cutoff's chunks partition the messages in order, fit chunk_size, and equal the direct rendering."""
        authors, texts, stamps = _messages(data)
        cfg = config_from_dict(
            {
                "model": {"model_id": "x"},
                "format": {"tag_placement": placement, "tag_sep": ": ", "postfix": "\n"},
                "prompt": {"template": "Chat: {name_mapping}"},
            }
        )
        fmt = ChatFormatter(tokenizer, cfg.format, cfg.prompt, _users())
        gaps = silence_hours(stamps)
        n = len(authors)
        for hours in cutoffs:
            sessions = session_ranges(gaps, 0, n, hours, 2)
            if turns_are_separable(fmt, AUTHORS):
                tokens = MessageTokens.build(fmt, authors, texts)
                budget = chunk_size - len(tokens.prefix_ids)
                ranges = [r for a, b in sessions for r in split_long(tokens.counts, gaps, a, b, budget)]
                chunks = tokens.chunk(ranges, budget, lambda i, t: True)
            else:
                chunks = tokenize_sessions(fmt, authors, texts, gaps, sessions, chunk_size, lambda i, t: True)
            bounds = [0] + [b for _, b in chunks.ranges]
            assert [a for a, _ in chunks.ranges] == bounds[:-1] and bounds[-1] == n
            assert chunks.lengths.max() <= chunk_size
            for i, (a, b) in enumerate(chunks.ranges):
                ids = chunks.ids[chunks.offsets[i] : chunks.offsets[i + 1]].tolist()
                rendered = fmt.render(list(zip(authors[a:b], texts[a:b], strict=True)))
                direct = tokenizer(rendered.text, add_special_tokens=False).input_ids
                assert ids == direct[:chunk_size]

    def test_both_tokenization_paths_agree(self, tokenizer):
        data = [(i % 4, list(range(i % 7, i % 7 + 5)), 30 + (i % 5) * 100) for i in range(80)]
        authors, texts, stamps = _messages(data)
        cfg = config_from_dict({"model": {"model_id": "x"}, "dataset": {"masked_authors": ["bob"]}})
        fmt = ChatFormatter(tokenizer, cfg.format, cfg.prompt, _users(), masked_authors=["bob"])
        assert turns_are_separable(fmt, AUTHORS)
        gaps = silence_hours(stamps)
        sessions = session_ranges(gaps, 0, len(authors), 1.0, 3)
        slow = tokenize_sessions(fmt, authors, texts, gaps, sessions, 200, lambda i, t: True)
        tokens = MessageTokens.build(fmt, authors, texts)
        budget = 200 - len(tokens.prefix_ids)
        fast = tokens.chunk(
            [r for a, b in sessions for r in split_long(tokens.counts, gaps, a, b, budget)], budget, None
        )
        assert fast.ranges == slow.ranges
        np.testing.assert_array_equal(fast.ids, slow.ids)
        np.testing.assert_array_equal(fast.labels, slow.labels)
        assert (fast.labels == IGNORE_INDEX).any() and (fast.labels != IGNORE_INDEX).any()


class TestMessageTokens:
    TRICKY = ["hi", " leading space", "\n\nnewlines first", "'s contraction", "42 is it", "🙂 emoji", "", "tab\tx"]

    def test_assembled_turns_equal_whole_turn_tokenization(self, tokenizer):
        cfg = config_from_dict({"model": {"model_id": "x"}})
        fmt = ChatFormatter(tokenizer, cfg.format, cfg.prompt, _users())
        authors = [AUTHORS[i % 4] for i in range(len(self.TRICKY))]
        tokens = MessageTokens.build(fmt, authors, self.TRICKY)
        assert tokens.composed > 0
        starts = np.concatenate([[0], np.cumsum(tokens.counts)])
        for i, (author, text) in enumerate(zip(authors, self.TRICKY, strict=True)):
            opening, closing = fmt.wrap(0, author)
            expected = tokenizer(opening + text + closing, add_special_tokens=False).input_ids
            assert tokens.ids[starts[i] : starts[i + 1]].tolist() == expected, text


class TestPrepareCli:
    def test_prints_stats_and_histogram(self, tmp_path, tiny_model_dir, capsys):
        chat = write_chat(tmp_path / "chat.csv", chat_rows([4, 5, 6, 5]))
        config = tmp_path / "cfg.yaml"
        config.write_text(
            f"model:\n  model_id: {tiny_model_dir}\ndataset:\n  users_json: {tmp_path / 'users.json'}\n"
            f"  cache_dir: {tmp_path / 'cache'}\n  min_share: 0\nyoutube:\n  enabled: 'off'\n"
        )
        code = cli_main(["prepare", "-c", str(config), "-d", str(chat), "--set", "dataset.eval_frac=0.25"])
        out = capsys.readouterr().out
        assert code == 0
        assert "messages kept" in out and "chunks" in out and "train" in out and "eval" in out
        assert "tokens per chunk" in out and "#" in out

    def test_counts_long_messages_by_what_happened_to_them(self, tmp_path, tiny_model_dir, capsys):
        rows = chat_rows([4, 5])
        rows[2] = (rows[2][0], "word " * 400, rows[2][2])
        chat = write_chat(tmp_path / "chat.csv", rows)
        config = tmp_path / "cfg.yaml"
        config.write_text(
            f"model:\n  model_id: {tiny_model_dir}\ndataset:\n  users_json: {tmp_path / 'users.json'}\n"
            f"  cache_dir: {tmp_path / 'cache'}\n  min_share: 0\nyoutube:\n  enabled: 'off'\n"
        )
        for mode, expected in (("truncate", "1 truncated, 0 dropped"), ("drop", "0 truncated, 1 dropped")):
            args = ["prepare", "-c", str(config), "-d", str(chat), "--set", "training.chunk_size=128"]
            assert cli_main([*args, "--set", f"dataset.long_messages={mode}"]) == 0
            assert f"messages over chunk_size: {expected} (dataset.long_messages)" in capsys.readouterr().out

    def test_bad_override_is_a_one_line_error(self, tmp_path, tiny_model_dir, capsys):
        config = tmp_path / "cfg.yaml"
        config.write_text(f"model:\n  model_id: {tiny_model_dir}\n")
        assert cli_main(["prepare", "-c", str(config), "--set", "dataset.eval_fracc=0.1"]) == 2
        assert "eval_frac" in capsys.readouterr().err


@pytest.mark.slow
class TestBuiltinTokenizer:
    def test_demo_chat_with_smollm2_has_no_injected_system_prompt(self, tmp_path):
        """The real SmolLM2 tokenizer (its template injects a default system prompt) on the shipped demo chat."""
        from cloneus.models.loading import load_tokenizer

        cfg = make_cfg(tmp_path, Path("unused"), prompt={"template": None}, training={"chunk_size": 512})
        cfg.model.model_id = "builtin:smollm2-135m"
        tokenizer = load_tokenizer(cfg.model)
        data = prepare_dataset(cfg, tokenizer, Path(__file__).resolve().parents[2] / "data/demo/demo_chat.json")
        assert data.stats["chunks"]["train"] > 0 and max(data.train["length"]) <= 512
        for row in data.train:
            text = tokenizer.decode(row["input_ids"])
            assert "SmolLM" not in text and text.startswith("<|im_start|>")
            assert row["labels"][0] != IGNORE_INDEX  # no system prompt: the first turn is trained from its start
