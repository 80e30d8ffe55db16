"""The progress file's reader and the one-line summary the bot shows (bot/progress.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.progress import ProgressState, format_duration, read_progress


class TestProgressState:
    def test_folds_events_into_one_line(self):
        state = ProgressState()
        for event in [
            {"event": "start", "run_dir": "runs/x/y", "total": 100},
            {"event": "log", "step": 40, "total": 100, "loss": 2.314, "tokens_per_s": 812.4, "eta_s": 192},
            {"event": "eval", "step": 40, "eval_loss": 2.396},
        ]:
            state.apply(event)
        filled = round(12 * 40 / 100)
        bar = f"[{'█' * filled}{'░' * (12 - filled)}]"
        assert state.render() == f"{bar} 40/100 · loss 2.31 · eval 2.40 · 812 tok/s · ETA 3m12s"
        assert state.run_dir == "runs/x/y" and state.final is None

    def test_final_event_keeps_last_checkpoint_and_drops_eta(self):
        state = ProgressState()
        state.apply({"event": "log", "step": 3, "total": 3, "eta_s": 5})
        state.apply({"event": "checkpoint", "step": 3, "path": "runs/x/y/checkpoint-3"})
        state.apply({"event": "interrupted", "checkpoint": None})
        assert state.final == "interrupted" and state.final_checkpoint == "runs/x/y/checkpoint-3"
        assert "ETA" not in state.render()

    @pytest.mark.parametrize(("seconds", "text"), [(42, "42s"), (192, "3m12s"), (3900, "1h05m"), (-1, "0s")])
    def test_format_duration(self, seconds, text):
        assert format_duration(seconds) == text


class TestReadProgress:
    def test_partial_line_waits_for_its_newline(self, tmp_path: Path):
        path = tmp_path / "progress.jsonl"
        path.write_text('{"event": "start", "total": 2}\n{"event": "log", "ste', encoding="utf-8")
        events, offset = read_progress(path)
        assert events == [{"event": "start", "total": 2}]
        with path.open("a", encoding="utf-8") as f:
            f.write('p": 1}\nnot json\n')
        events, offset = read_progress(path, offset)
        assert events == [{"event": "log", "step": 1}]
        assert offset == path.stat().st_size

    def test_missing_file_is_no_events(self, tmp_path: Path):
        assert read_progress(tmp_path / "none.jsonl", 7) == ([], 7)
