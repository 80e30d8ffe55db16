"""Preference tuning from the bot's reactions, on the tiny model: reading the database, refusals, KTO and DPO runs.

The feedback is synthetic but goes through the bot's real store (`bot.store.Store`), so the library reads the
schema the bot writes. Liked replies share a marker phrase and disliked ones another; a run must raise the
marker's likelihood after the same prompts and lower the disliked phrase's, measured on the saved checkpoint.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cloneus.cli import main
from cloneus.errors import CloneusError
from cloneus.inference.checkpoint import read_checkpoint
from cloneus.training.feedback import ExampleEncoder, mean_logprob, train_feedback
from cloneus.training.feedback_data import FeedbackExample, read_feedback
from cloneus.training.trainer import train

from .conftest import AUTHORS, LINES, tiny_config

LIKED = "pineapple pizza forever"
DISLIKED = "xylophone quarrel nonsense"
ALICE_ID, BOB_ID, CAROL_ID = 11, 12, 13  # Discord ids of the voters; the clones are the index's authors


def _history(i: int) -> list[list[str]]:
    return [[AUTHORS[(i + k) % 3], f"{LINES[(i + k) % len(LINES)]} {i}"] for k in range(3)]


async def _fill(db: Path, messages: int, *, versions: bool, opted_out_voter: int | None = None) -> None:
    """`messages` clone replies as alice/bob; each liked (marker) by one voter, and with `versions` a regenerated
    disliked version voted by another, else every third reply disliked instead."""
    from bot.store import Store

    async with await Store.open(db) as store:
        for i in range(messages):
            mid = 1000 + i
            author = AUTHORS[i % 2]
            history = _history(i)
            await store.record_reply(mid, 1, author, ALICE_ID, {"history": history, "author": author, "text": ""})
            if versions:
                await store.add_feedback(mid, ALICE_ID, 1, [*history, [author, f"{LIKED} {i}"]])
                await store.add_feedback(mid, BOB_ID, -1, [*history, [author, f"{DISLIKED} {i}"]])
            elif i % 2:
                await store.add_feedback(mid, ALICE_ID, -1, [*history, [author, f"{DISLIKED} {i}"]])
            else:
                await store.add_feedback(mid, ALICE_ID, 1, [*history, [author, f"{LIKED} {i}"]])
        if opted_out_voter is not None:
            await store.add_feedback(999, opted_out_voter, 1, [*_history(0), ["alice", "from someone who left"]])
            await store.set_opt_out(opted_out_voter, True)


def make_db(path: Path, messages: int, **kwargs) -> Path:
    asyncio.run(_fill(path, messages, **kwargs))
    return path


@pytest.fixture(scope="module")
def source(tiny_model_dir, chat_csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("feedback-src")
    cfg = tiny_config(tiny_model_dir, root, max_steps=2, save_steps=2)
    return train(cfg, chatlog=chat_csv, run_name="src").checkpoint


def phrase_scores(checkpoint: Path, phrase_texts: list[str]) -> list[float]:
    """Mean log-likelihood of `LIKED`/`DISLIKED`-style replies after fresh prompts, under a checkpoint."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = read_checkpoint(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(info.path)
    base = AutoModelForCausalLM.from_pretrained(info.config.model.model_id)
    model = PeftModel.from_pretrained(base, str(info.path)).eval()
    encoder = ExampleEncoder(info.config, tokenizer, info.users)
    rows = [
        encoder.encode(FeedbackExample(0, [tuple(m) for m in _history(50 + i)], "alice", text, None, True, 1))
        for i, text in enumerate(phrase_texts)
    ]
    return mean_logprob(model, rows)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


class TestReadFeedback:
    def test_versions_make_pairs_and_opted_out_votes_are_dropped(self, source, tmp_path):
        db = make_db(tmp_path / "bot.db", 4, versions=True, opted_out_voter=CAROL_ID)
        fs = read_feedback(db, read_checkpoint(source).users)
        assert fs.counts() == {"liked": 4, "disliked": 4, "pairs": 4}
        assert all(p.chosen.message_id == p.rejected.message_id for p in fs.pairs)
        assert all(LIKED in p.chosen.text and DISLIKED in p.rejected.text for p in fs.pairs)
        assert 999 not in {ex.message_id for ex in fs.examples}

    def test_an_opted_out_member_in_the_index_is_never_used(self, source, tmp_path):
        db = make_db(tmp_path / "bot.db", 6, versions=False)
        users = read_checkpoint(source).users.model_copy(deep=True)
        users.set("bob", opted_out=True)
        fs = read_feedback(db, users)
        # bob is in every context (and the clone of half the replies): nothing is left.
        assert fs.examples == [] and fs.skipped["member_opted_out_or_excluded"] == 6

    def test_split_keeps_every_version_of_a_reply_together(self, source, tmp_path):
        fs = read_feedback(make_db(tmp_path / "bot.db", 10, versions=True), read_checkpoint(source).users)
        train_set, held = fs.split(0.3, seed=1)
        assert len({ex.message_id for ex in held.examples}) == 3
        assert not {ex.message_id for ex in train_set.examples} & {ex.message_id for ex in held.examples}

    def test_not_a_bot_database(self, tmp_path, source):
        import sqlite3

        sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
        with pytest.raises(CloneusError, match="not a CloneUs bot database"):
            read_feedback(tmp_path / "other.db", read_checkpoint(source).users)


class TestEncoding:
    def test_prompt_is_the_generation_prompt_and_completion_ends_the_turn(self, source):
        from transformers import AutoTokenizer

        info = read_checkpoint(source)
        tokenizer = AutoTokenizer.from_pretrained(info.path)
        encoder = ExampleEncoder(info.config, tokenizer, info.users)
        ex = FeedbackExample(1, [("bob", "hi")], "alice", "count me in", None, True, 1)
        prompt, completion = encoder.texts(ex)
        rendered = encoder.formatter.render([("bob", "hi"), ("alice", "count me in")]).text
        assert prompt == encoder.formatter.generation_prompt([("bob", "hi")], "alice")
        assert prompt + completion == rendered
        tok = encoder.encode(ex)
        assert tok.prompt_ids + tok.completion_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]

    def test_prompt_is_the_one_cloneus_sends_for_the_same_history(self, source):
        from cloneus import Cloneus

        clone = Cloneus.from_pretrained(source, device="cpu")
        history = [("bob", "!roll d20"), ("carol", "pizza on friday?"), ("bob", "count me in")]
        ex = FeedbackExample(1, history, "alice", "sure", None, True, 1)
        prompt, _ = ExampleEncoder(clone.config, clone.tokenizer, clone.users).texts(ex)
        assert prompt == clone._prompt(history, "alice", None, clone.sampling_defaults)
        assert "!roll" not in prompt


class TestRefusal:
    def test_too_few_examples_says_how_many_more(self, source, tmp_path):
        db = make_db(tmp_path / "bot.db", 6, versions=False)
        cfg = read_checkpoint(source).config
        with pytest.raises(CloneusError, match=r"5 thumbed replies .* so 11 more are needed"):
            train_feedback(cfg, db, source)

    def test_dpo_without_pairs_says_how_many_more(self, source, tmp_path):
        db = make_db(tmp_path / "bot.db", 6, versions=False)
        cfg = read_checkpoint(source).config.model_copy(deep=True)
        cfg.feedback.method = "dpo"
        with pytest.raises(CloneusError, match="found 0: 8 more needed"):
            train_feedback(cfg, db, source)


def _tuned(source: Path, db: Path, root: Path, method: str) -> Path:
    cfg = read_checkpoint(source).config.model_copy(deep=True)
    cfg.training.output_root = str(root / "runs")
    cfg.training.save_steps = 100
    cfg.feedback.method = method
    cfg.feedback.learning_rate = 3e-3
    cfg.feedback.num_epochs = 4
    cfg.feedback.min_examples = 8
    cfg.feedback.min_pairs = 4
    result = train_feedback(cfg, db, source, run_name=f"fb-{method}", progress_file=root / "copy.jsonl")
    assert result.interrupted is None and result.checkpoint is not None
    return result.checkpoint


@pytest.mark.parametrize(("method", "versions"), [("kto", False), ("dpo", True)])
def test_tuning_raises_the_liked_phrase_and_lowers_the_disliked_one(source, tmp_path, method, versions):
    db = make_db(tmp_path / "bot.db", 20, versions=versions)
    checkpoint = _tuned(source, db, tmp_path, method)
    probes_liked = [f"{LIKED} {i}" for i in range(4)]
    probes_disliked = [f"{DISLIKED} {i}" for i in range(4)]
    before = [_mean(phrase_scores(source, probes)) for probes in (probes_liked, probes_disliked)]
    after = [_mean(phrase_scores(checkpoint, probes)) for probes in (probes_liked, probes_disliked)]
    assert after[0] > before[0], "the liked phrase became less likely"
    assert after[1] < before[1], "the disliked phrase became more likely"

    run = checkpoint.parent
    for name in ("config.yaml", "users.json", "progress.jsonl", "metrics.json", "loss.png", "feedback.json"):
        assert (run / name).is_file(), name
    for name in ("adapter_config.json", "cloneus_config.yaml", "users.json"):
        assert (checkpoint / name).is_file(), name
    scores = json.loads((run / "metrics.json").read_text())["feedback"]
    assert scores["method"] == method
    assert scores["after"]["margin"] > scores["before"]["margin"]
    events = [json.loads(line) for line in (tmp_path / "copy.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"


def test_cli_trains_from_a_checkpoint_and_eval_runs_on_the_result(source, tmp_path, capsys):
    db = make_db(tmp_path / "bot.db", 12, versions=False)
    code = main(
        [
            "train",
            "--feedback",
            str(db),
            "--from",
            str(source),
            "--max-steps",
            "2",
            "--run-name",
            "cli",
            "--set",
            f"training.output_root={tmp_path / 'runs'}",
            "--set",
            "feedback.min_examples=4",
            "--set",
            "feedback.holdout_frac=0.5",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "method: kto" in out and "pair_accuracy" in out
    checkpoint = next((tmp_path / "runs").glob("*/cli/checkpoint-2"))
    argv = ["eval", str(checkpoint), "--no-base", "--max-conversations", "1", "--max-turns", "2", "--max-replies", "1"]
    assert main(argv) == 0
    assert (checkpoint / "eval.json").is_file()


def test_reference_is_the_frozen_source_adapter(source, tmp_path):
    from safetensors.torch import load_file

    db = make_db(tmp_path / "bot.db", 20, versions=False)
    checkpoint = _tuned(source, db, tmp_path, "kto")
    served = load_file(source / "adapter_model.safetensors")
    ref = load_file(checkpoint / "ref" / "adapter_model.safetensors")
    tuned = load_file(checkpoint / "adapter_model.safetensors")
    assert served.keys() == ref.keys() == tuned.keys()
    assert all((served[k] == ref[k]).all() for k in served)
    assert any(not (served[k] == tuned[k]).all() for k in served)


def test_resume_continues_the_same_run_on_the_same_split(source, tmp_path):
    from cloneus.config import load_config

    db = make_db(tmp_path / "bot.db", 20, versions=False)
    cfg = read_checkpoint(source).config.model_copy(deep=True)
    cfg.training.output_root = str(tmp_path / "runs")
    cfg.training.save_steps = 1
    cfg.feedback.max_steps = 2
    cfg.feedback.min_examples = 8
    first = train_feedback(cfg, db, source, run_name="r")
    split = json.loads((first.run_dir / "feedback.json").read_text())
    make_db(db, 24, versions=False)  # new reactions arrive; the resumed run keeps its own split
    cfg = load_config(first.run_dir / "config.yaml", ["feedback.max_steps=3"])
    resumed = train_feedback(cfg, db, None, resume=first.checkpoint)
    assert resumed.run_dir == first.run_dir and resumed.checkpoint.name == "checkpoint-3"
    again = json.loads((first.run_dir / "feedback.json").read_text())
    assert again["train_message_ids"] == split["train_message_ids"]
    assert again["source_checkpoint"] == str(source)
