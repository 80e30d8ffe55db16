"""The terminal chat: driven through its loop with StringIO, and once end to end as `python -m cloneus chat`."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from cloneus.errors import ConfigError
from cloneus.inference.chat import parse_assignments, run_chat
from cloneus.inference.cli import split_overrides
from tests.inference.conftest import AUTHORS

SMALL = {"max_new_tokens": 6}


def chat(clo, script: str, **kwargs):
    out = io.StringIO()
    session = run_chat(clo, io.StringIO(script), out, **kwargs)
    return session, out.getvalue()


class TestChatLoop:
    def test_each_line_gets_a_reply_from_a_clone(self, clo):
        session, output = chat(clo, "hello all\nanyone here?\n/quit\nnever read\n", me="zoe", sampling=SMALL)
        authors = [t.author for t in session.history]
        assert authors[0] == "zoe" and authors[2] == "zoe"
        assert authors[1] in AUTHORS and authors[3] in AUTHORS
        assert f"{authors[1]}: {session.history[1].text}\n" in output
        assert "never read" not in output

    def test_as_injects_and_next_lets_the_model_speak(self, clo):
        session, _ = chat(clo, "/as carol is it friday yet\n/next\n/next\n", sampling=SMALL, mode="top")
        assert (session.history[0].author, session.history[0].text) == ("carol", "is it friday yet")
        assert len(session.history) == 3
        assert all(t.author in AUTHORS for t in session.history[1:])

    def test_the_model_reads_the_lines_as_training_normalised_them(self, clo):
        session, _ = chat(clo, "/as carol !play a song\n/as carol hi\n/as carol there\n/as bob <|im_start|>yo\n")
        turns = clo.normalize_history(session.history)
        assert [(t.author, t.text) for t in turns] == [("carol", "hi\nthere"), ("bob", "yo")]

    def test_set_changes_sampling_and_rejects_bad_values(self, clo):
        session, output = chat(clo, "/set temperature=0.5 top_k=3\n/set temperature=99\n/bogus\n/as onlyname\n")
        assert session.sampling == {"temperature": 0.5, "top_k": 3}
        assert output.count("error:") == 3
        assert "temperature" in output.split("error:")[1]

    def test_you_are_never_picked_to_speak(self, clo):
        session, _ = chat(clo, "/next\n/next\n/next\n", me="bob", sampling=SMALL, mode="uniform")
        assert {t.author for t in session.history} <= {"alice", "carol"}


class TestCliParsing:
    def test_split_overrides(self):
        assert split_overrides(["temperature=0.7", "inference.backend=openai"]) == (
            ["inference.backend=openai"],
            ["temperature=0.7"],
        )
        with pytest.raises(ConfigError, match="inference"):
            split_overrides(["training.max_steps=3"])

    def test_parse_assignments_types_values(self):
        assert parse_assignments(["top_k=3", "temperature=0.5", "do_sample=false"]) == {
            "top_k": 3,
            "temperature": 0.5,
            "do_sample": False,
        }
        with pytest.raises(ConfigError, match="key=value"):
            parse_assignments(["oops"])


def test_chat_command_end_to_end(checkpoint):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "cloneus", "chat", str(checkpoint), "--as", "zoe", "--set", "max_new_tokens=5"],
        input="hi everyone\n/as alice yo\n/quit\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "chatting as 'zoe'" in result.stdout
    replies = [line for line in result.stdout.splitlines() if any(line.startswith(f"> {a}: ") for a in AUTHORS)]
    assert len(replies) == 1


def test_chat_command_bad_mode_is_a_user_error(checkpoint, capsys):
    from cloneus.cli import main

    assert main(["chat", str(checkpoint), "--mode", "loud"]) == 2
    assert "--mode" in capsys.readouterr().err
