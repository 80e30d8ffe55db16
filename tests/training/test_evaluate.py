"""The eval command's pieces: held-out loss, speaker scoring consistent with the inference API, the report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cloneus.cli import main
from cloneus.training.evaluate import continuation_logprobs, evaluate_checkpoint, heldout_loss
from cloneus.training.trainer import train

from .conftest import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, chat_csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-run")
    cfg = tiny_config(tiny_model_dir, root, max_steps=2, save_steps=2)
    return train(cfg, chatlog=chat_csv, run_name="e").checkpoint


@pytest.fixture(scope="module")
def clone(checkpoint):
    from cloneus import Cloneus

    return Cloneus.from_pretrained(checkpoint, device="cpu")


class TestScoring:
    def test_heldout_loss_equals_the_models_own_mean_loss(self, clone):
        model = clone.backend.model
        ids = clone.tokenizer("<|im_start|>alice\npizza on friday?<|im_end|>\n")["input_ids"]
        labels = [-100] * 3 + ids[3:]
        loss, tokens = heldout_loss(model, [{"input_ids": ids, "labels": labels}])
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), use_cache=False).loss
        assert tokens == len(ids) - 3
        assert loss == pytest.approx(expected.item(), abs=1e-5)

    def test_speaker_scores_match_the_inference_api(self, clone):
        history = [("alice", "did anyone watch the game?"), ("bob", "no, I was debugging")]
        prefix, options = clone.formatter.speaker_prompt(history)
        names = list(options)
        scores = continuation_logprobs(clone.backend.model, clone.tokenizer, prefix, list(options.values()))
        scores = torch.tensor(scores)
        ours = dict(zip(names, scores.softmax(0).tolist(), strict=True))
        theirs = clone.author_probabilities(history)
        assert ours == pytest.approx(theirs, abs=1e-4)


class TestEvaluateCheckpoint:
    def test_report_compares_finetuned_base_and_frequency_baseline(self, checkpoint):
        report = evaluate_checkpoint(checkpoint, base=True, max_conversations=2, max_turns=4, samples=1, device="cpu")
        saved = json.loads((checkpoint / "eval.json").read_text())
        assert saved["finetuned"] == pytest.approx(report["finetuned"])
        for name in ("finetuned", "base"):
            r = report[name]
            assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
            assert 0 <= r["next_speaker_top1"] <= r["next_speaker_top3"] <= 1
        assert report["base"]["loss"] != report["finetuned"]["loss"], "--base must score with the adapter disabled"
        baseline = report["most_frequent_baseline"]
        assert baseline["author"] == "alice" and baseline["turns"] > 0
        assert len(report["samples"]) == 1 and isinstance(report["samples"][0]["generated"], str)

    def test_cli_prints_the_table(self, checkpoint, capsys):
        assert main(["eval", str(checkpoint), "--max-conversations", "1", "--max-turns", "2", "--samples", "0"]) == 0
        out = capsys.readouterr().out
        assert "finetuned" in out and "always alice" in out
