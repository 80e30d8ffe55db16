"""The whole eval on the tiny model: files written, figures traced back to the held-out data, CLI and progress."""

from __future__ import annotations

import json
import statistics

import pytest

from cloneus.cli import main
from cloneus.errors import CloneusError
from cloneus.evaluation.intervals import mcnemar_exact, wilson_interval
from cloneus.evaluation.report import format_report, summary_line
from cloneus.evaluation.suite import evaluate_checkpoint

from .conftest import HTML_LINE


@pytest.fixture(scope="module")
def evaluated(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-out")
    progress = out / "progress.jsonl"
    budget = {"max_conversations": 3, "max_turns": 500, "max_replies": 100}
    report = evaluate_checkpoint(checkpoint, **budget, device="cpu", out_dir=out, progress_file=progress)
    return report, out, progress


@pytest.fixture(scope="module")
def held_out(checkpoint):
    """The held-out member messages, rebuilt here from the dataset code, to check the report against."""
    from cloneus import Cloneus
    from cloneus.data.dataset import prepare_dataset

    clone = Cloneus.from_pretrained(checkpoint, device="cpu")
    conversations = prepare_dataset(clone.config, clone.tokenizer, None, clone.users).eval_conversations
    members = [u.display_name for u in clone.users.trainable()]
    clone.unload()
    return [(a, t) for conv in conversations for a, t in conv[1:] if a in members], members


class TestEvaluateCheckpoint:
    def test_writes_json_png_and_html(self, evaluated):
        report, out, _ = evaluated
        assert json.loads((out / "eval.json").read_text())["summary"] == pytest.approx(report["summary"])
        assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        html = (out / "eval.html").read_text()
        assert "data:image/png;base64," in html and 'id="human"' in html

    def test_each_stage_is_timed_for_each_model(self, evaluated):
        report, _, _ = evaluated
        assert set(report["stage_seconds"]) == {"finetuned", "base"}
        for stages in report["stage_seconds"].values():
            assert set(stages) == {"perplexity", "next_speaker", "replies"}
            assert all(s >= 0 for s in stages.values())
        assert sum(sum(s.values()) for s in report["stage_seconds"].values()) <= report["seconds"]

    def test_chat_text_is_escaped_in_the_html(self, evaluated):
        report, out, _ = evaluated
        assert any(s["real"] == HTML_LINE for s in report["samples"]), "the fixture's HTML line is a held-out sample"
        html = (out / "eval.html").read_text()
        assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp;" in html

    def test_every_held_out_member_turn_is_scored_within_the_budget(self, evaluated, held_out):
        report, _, _ = evaluated
        messages, members = held_out
        assert report["members"] == members
        assert report["split"]["turns"] == report["split"]["real_messages"] == len(messages)
        for name in ("finetuned", "base", "most_frequent"):
            assert report["next_speaker"][name]["turns"] == len(messages)
            per = report["next_speaker"][name]["members"]
            assert sum(per[m]["turns"] for m in members) == len(messages)
        assert report["next_speaker"]["most_frequent"]["author"] == members[0]

    def test_real_figures_come_from_the_held_out_messages(self, evaluated, held_out):
        report, _, _ = evaluated
        messages, members = held_out
        real = report["surface"]["real"]
        assert real["n"] == len(messages)
        assert real["words_mean"] == pytest.approx(statistics.fmean(len(t.split()) for _, t in messages))
        alice = [t for a, t in messages if a == "alice"]
        assert real["members"]["alice"]["caps_rate"] == pytest.approx(
            sum(t.upper() == t for t in alice if t != HTML_LINE) / len(alice)
        )
        assert report["attribution"]["real"]["n"] == len(messages)
        assert report["attribution"]["real"]["accuracy"] > 0.9, "the fixture's three styles are easy to tell apart"
        assert report["chance"] == pytest.approx(1 / 3)

    def test_base_is_the_model_without_its_adapter(self, evaluated):
        report, _, _ = evaluated
        ft, base = report["perplexity"]["finetuned"], report["perplexity"]["base"]
        assert ft["tokens"] == base["tokens"] > 0
        assert ft["loss"] != base["loss"]
        assert report["summary"]["perplexity_vs_base"] == pytest.approx(ft["perplexity"] / base["perplexity"])
        replies = report["split"]["replies"]
        assert report["attribution"]["finetuned"]["n"] == report["attribution"]["base"]["n"] == replies
        assert len(report["samples"]) == replies and all({"finetuned", "base"} <= set(s) for s in report["samples"])

    def test_the_paired_attribution_test_counts_the_same_replies(self, evaluated):
        report, _, _ = evaluated
        attr, replies = report["attribution"], report["split"]["replies"]
        paired = attr["finetuned_vs_base"]
        hits = {name: round(attr[name]["accuracy"] * replies) for name in ("finetuned", "base")}
        assert paired["finetuned_only"] - paired["base_only"] == hits["finetuned"] - hits["base"]
        assert paired["finetuned_only"] <= hits["finetuned"] and paired["base_only"] <= hits["base"]
        assert paired["p_value"] == pytest.approx(mcnemar_exact(paired["finetuned_only"], paired["base_only"]))
        assert report["summary"]["attribution_p_vs_base"] == paired["p_value"]
        summary = report["summary"]
        low, high = wilson_interval(hits["finetuned"], replies)
        assert summary["attribution_ci95_low"] == pytest.approx(low)
        assert summary["attribution_ci95_high"] == pytest.approx(high)

    def test_table_page_and_summary_say_how_sure_the_rates_are(self, evaluated):
        report, out, _ = evaluated
        p_value = report["attribution"]["finetuned_vs_base"]["p_value"]
        low, high = report["attribution"]["finetuned"]["ci95"]
        table = format_report(report)
        assert f"exact McNemar p = {p_value:.3g}" in table
        assert f"(95% CI {100 * low:.1f}–{100 * high:.1f}%, {report['split']['replies']} texts)" in table
        assert f"{report['split']['turns']} turns)" in table
        assert f"exact McNemar p = {p_value:.3g}" in (out / "eval.html").read_text()
        assert f"95% CI {100 * low:.1f}–{100 * high:.1f}%" in summary_line(report["summary"])

    def test_the_human_slot_is_left_empty(self, evaluated):
        report, _, _ = evaluated
        assert report["human"] == {"fooled_rate": None, "judgements": 0, "source": None}

    def test_progress_counts_every_unit_then_reports_the_summary(self, evaluated):
        report, out, progress = evaluated
        events = [json.loads(line) for line in progress.read_text().splitlines()]
        assert events[0]["event"] == "start"
        logs = [e for e in events if e["event"] == "log"]
        assert len(logs) == events[0]["total"] == logs[-1]["step"]
        assert events[-1]["event"] == "done" and events[-1]["metrics"] == pytest.approx(report["summary"])
        assert events[-1]["files"]["png"] == str(out / "eval.png")

    def test_max_turns_bounds_the_next_speaker_turns(self, checkpoint, tmp_path):
        report = evaluate_checkpoint(
            checkpoint, base=False, max_conversations=1, max_turns=5, max_replies=2, device="cpu", out_dir=tmp_path
        )
        assert report["split"]["turns"] == report["next_speaker"]["finetuned"]["turns"] == 5
        assert "base" not in report["perplexity"] and report["split"]["replies"] == 2


class TestEvalCommand:
    def test_cli_prints_the_table_and_writes_the_files(self, checkpoint, tmp_path, capsys):
        argv = ["eval", str(checkpoint), "--max-conversations", "1", "--max-turns", "4", "--max-replies", "3"]
        assert main([*argv, "--out", str(tmp_path), "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert "overall" in out and "alice" in out and "human fooled rate: not measured yet" in out
        assert {p.name for p in tmp_path.iterdir()} >= {"eval.json", "eval.png", "eval.html"}

    def test_a_failure_is_reported_in_the_progress_file(self, checkpoint, tmp_path):
        progress = tmp_path / "p.jsonl"
        with pytest.raises(CloneusError, match="chat export not found"):
            evaluate_checkpoint(checkpoint, chatlog=tmp_path / "missing.csv", progress_file=progress)
        assert json.loads(progress.read_text().splitlines()[-1])["event"] == "error"
