"""Files that are not what they claim: wrong-kind JSON values, deep nesting, truncation, unsupported apps,
encodings, non-text content, WhatsApp locales and impossible times, look-alike author names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import (
    dce_message,
    expect_error,
    minutes_apart,
    telegram_message,
    write_csv,
    write_dce_json,
    write_telegram,
)

AUTHORS = ["ann", "bob", "cat"]
REPO = Path(__file__).parents[2]


def dce_messages(count: int = 6) -> list[dict]:
    return [dce_message(i, AUTHORS[i % 3], f"hello there {i}", s) for i, s in enumerate(minutes_apart(count))]


WRONG_KINDS = {"a string": "oops", "a list": [1, 2], "null": None, "a number": 7}


class TestWrongKindDiscordValues:
    @pytest.mark.parametrize("kind", list(WRONG_KINDS))
    def test_a_message_that_is_not_an_object_is_a_counted_drop(self, tmp_path, prepare, kind):
        messages = dce_messages()
        messages[2] = WRONG_KINDS[kind]
        outcome = prepare(write_dce_json(tmp_path / "chat.json", messages))
        assert outcome.error is None and outcome.dropped.get("malformed") == 1
        assert len(outcome.frame) == 5

    @pytest.mark.parametrize("field", ["author", "attachments", "mentions", "reference"])
    @pytest.mark.parametrize("kind", ["a string", "a list", "a number"])
    def test_a_field_of_the_wrong_kind_is_a_counted_drop_naming_it(self, tmp_path, prepare, field, kind, caplog):
        messages = dce_messages()
        value = WRONG_KINDS[kind]
        if field in ("attachments", "mentions") and kind == "a list":
            value = ["not an object"]
        if field == "reference" and kind == "a list":
            value = [{"messageId": "5000"}]
        messages[3][field] = value
        outcome = prepare(write_dce_json(tmp_path / "chat.json", messages))
        assert outcome.error is None and outcome.dropped.get("malformed") == 1
        assert f"messages[3].{field}" in caplog.text

    @pytest.mark.parametrize("content", [["a", "list"], {"an": "object"}, 12.5, True])
    def test_non_text_content_is_never_trained_as_a_repr(self, tmp_path, prepare, content):
        messages = dce_messages()
        messages[1]["content"] = content
        outcome = prepare(write_dce_json(tmp_path / "chat.json", messages))
        assert outcome.dropped.get("malformed") == 1
        assert not outcome.frame["text"].str.contains(r"[\[{]|12\.5|True", regex=True).any()

    def test_every_message_malformed_is_an_error_naming_the_file(self, tmp_path, prepare):
        chat = write_dce_json(tmp_path / "chat.json", ["x", None, [1]])
        expect_error(prepare(chat), str(chat), "no messages")


class TestDeepNesting:
    SCRIPT = textwrap.dedent(
        """
        import resource, sys
        limit = int(sys.argv[2])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from cloneus.data.readers import read_chat
        from cloneus.errors import CloneusError
        try:
            read_chat(sys.argv[1])
        except CloneusError as e:
            print("ERROR", e)
        """
    )

    @pytest.mark.parametrize("opener", ["[", '{"a":', "[{}, "])
    def test_read_stays_within_bounded_memory_and_names_the_depth(self, tmp_path, opener):
        """400 KB of nesting once took 20 GB: read it under a 2 GiB address-space limit in a child process."""
        head = json.dumps({"guild": {"id": "1"}, "messages": [dce_messages(1)[0]]})[:-2]
        body = opener * (400_000 // len(opener))
        path = tmp_path / "deep.json"
        path.write_text(head + ', "content": ' + body, encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-c", self.SCRIPT, str(path), str(2 << 30)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "ERROR" in done.stdout and "nested more than 64 levels" in done.stdout

    def test_ordinary_nesting_in_strings_is_not_counted(self, tmp_path, prepare):
        messages = dce_messages()
        messages[0]["content"] = "[" * 500 + ' \\" {{{{ ' + "\\" * 3
        outcome = prepare(write_dce_json(tmp_path / "chat.json", messages))
        assert outcome.error is None and outcome.frame["text"].str.startswith("[[[[").any()


class TestTruncatedTelegram:
    @pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.8, 0.99])
    def test_a_cut_export_names_the_problem(self, tmp_path, prepare, fraction):
        messages = [telegram_message(i, AUTHORS[i % 3], f"hi {i}", s[:19]) for i, s in enumerate(minutes_apart(8))]
        full = write_telegram(tmp_path / "full.json", messages).read_bytes()
        chat = tmp_path / "result.json"
        chat.write_bytes(full[: int(len(full) * fraction)])
        expect_error(prepare(chat), str(chat), "JSON")

    def test_a_cut_full_export_names_the_problem(self, tmp_path, prepare):
        chat = tmp_path / "result.json"
        chat.write_text('{"about": "x", "chats": {"list": [{"name": "a", "messages": [{"id": 1', encoding="utf-8")
        expect_error(prepare(chat), "truncated")

    def test_wrong_kind_telegram_messages_are_counted_drops(self, tmp_path, prepare):
        messages = [telegram_message(i, AUTHORS[i % 3], f"hi {i}", s[:19]) for i, s in enumerate(minutes_apart(6))]
        messages[1] = "text"
        messages[2]["from"] = ["ann"]
        messages[3]["text"] = [{"type": "bold", "text": ["nested"]}]
        outcome = prepare(write_telegram(tmp_path / "result.json", messages))
        assert outcome.dropped.get("malformed") == 3 and len(outcome.frame) == 3


UNSUPPORTED = {
    "instagram": (
        "message_1.json",
        json.dumps(
            {
                "participants": [{"name": "ann"}, {"name": "bob"}],
                "messages": [{"sender_name": "ann", "timestamp_ms": 1700000000000, "content": "hi"}],
                "title": "ann",
                "thread_path": "inbox/ann_1",
                "magic_words": [],
            }
        ),
        "Instagram or Facebook Messenger",
    ),
    "messenger": (
        "message_1.json",
        json.dumps({"messages": [{"sender_name": "Ann", "timestamp_ms": 1, "content": "hi", "is_unsent": False}]}),
        "Messenger",
    ),
    "signal_markdown": (
        "chat.md",
        "[2019-05-29, 15:04] Me: How is everyone?\n[2019-05-29, 15:10] Jim: Good thanks!\n",
        "Signal",
    ),
    "signal_xml": (
        "SignalPlaintextBackup.xml",
        "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>\n<smses count=\"1\">\n<sms body=\"hi\" /></smses>\n",
        "Signal",
    ),
    "html": ("messages.html", "<!DOCTYPE html>\n<html><body>ann: hi</body></html>\n", "HTML"),
}


class TestUnsupportedExports:
    @pytest.mark.parametrize("name", list(UNSUPPORTED))
    def test_reported_as_unsupported_with_the_supported_list(self, tmp_path, prepare, name):
        filename, body, app = UNSUPPORTED[name]
        chat = tmp_path / filename
        chat.write_text(body, encoding="utf-8")
        expect_error(prepare(chat), "unsupported", app, "Supported formats", "WhatsApp", "Telegram", "generic CSV")


def _generic_csv_text() -> str:
    return "username,text,timestamp\n" + "".join(
        f"{AUTHORS[i % 3]},café número {i},{s}\n" for i, s in enumerate(minutes_apart(5))
    )


ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252"]


class TestEncodings:
    @pytest.mark.parametrize("encoding", ENCODINGS)
    @pytest.mark.parametrize("kind", ["csv", "whatsapp", "dce_json"])
    def test_named_as_an_encoding_problem(self, tmp_path, prepare, encoding, kind):
        if kind == "csv":
            text = _generic_csv_text()
        elif kind == "whatsapp":
            text = "".join(f"15/01/2024, 09:0{i} - {AUTHORS[i % 3]}: olá café {i}\n" for i in range(5))
        else:
            export = {"guild": {"id": "1"}, "messages": dce_messages()}
            export["messages"][0]["content"] = "café"
            text = json.dumps(export, ensure_ascii=False)
        chat = tmp_path / f"chat.{kind}"
        chat.write_bytes(text.encode(encoding))
        message = expect_error(prepare(chat), str(chat))
        assert (
            ("UTF-16" in message or "UTF-32" in message)
            if encoding.startswith("utf")
            else "not valid UTF-8" in message
        )
        assert "iconv" in message


class TestWhatsAppLocales:
    @pytest.mark.parametrize(
        ("placeholder", "reason"),
        [
            ("<Medien ausgeschlossen>", "media"),
            ("<Multimedia omitido>", "media"),
            ("<Médias omis>", "media"),
            ("<Media omessi>", "media"),
            ("<Mídia oculta>", "media"),
            ("<Media weggelaten>", "media"),
            ("Bild weggelassen", "media"),
            ("imagen omitida", "media"),
            ("<Anhang: 00000012-PHOTO.jpg>", "media"),
            ("Diese Nachricht wurde gelöscht", "deleted"),
            ("Se eliminó este mensaje.", "deleted"),
            ("Ce message a été supprimé", "deleted"),
        ],
    )
    def test_placeholders_in_other_languages_are_counted_drops(self, tmp_path, prepare, placeholder, reason):
        chat = tmp_path / "chat.txt"
        lines = [f"15.01.24, 09:0{i} - {AUTHORS[i % 3]}: echt {i}" for i in range(4)]
        lines.insert(2, f"15.01.24, 09:05 - bob: {placeholder}")
        chat.write_text("\n".join(lines) + "\n", encoding="utf-8")
        outcome = prepare(chat)
        assert outcome.dropped.get(reason) == 1 and placeholder not in outcome.frame["text"].tolist()

    def test_an_unknown_repeated_placeholder_is_warned_about(self, tmp_path, prepare, caplog):
        chat = tmp_path / "chat.txt"
        chat.write_text("".join(f"15/01/2024, 09:0{i} - {AUTHORS[i % 3]}: <Mediat jätetty pois>\n" for i in range(4)))
        prepare(chat)
        assert "<Mediat jätetty pois>" in caplog.text and "placeholder" in caplog.text

    @pytest.mark.parametrize("clock", ["25:61", "24:00", "09:60", "13:05 PM", "00:10 AM", "12:00:61"])
    def test_impossible_times_name_the_line(self, tmp_path, prepare, clock):
        chat = tmp_path / "chat.txt"
        chat.write_text(f"15/01/2024, 09:05 - ann: hi\n15/01/2024, {clock} - bob: later\n", encoding="utf-8")
        message = expect_error(prepare(chat), "impossible time", "line 2")
        assert clock.split()[0].split(":")[0] in message


LOOK_ALIKES = ["alice", "\ufeffalice", "a\u200dlice", "al\x00ice", " alice ", "alice\u200b", "\u202aalice\u202c"]


class TestLookAlikeAuthors:
    @pytest.mark.parametrize("kind", ["csv", "whatsapp", "telegram"])
    def test_names_that_look_alike_are_one_user(self, tmp_path, prepare, kind, caplog):
        stamps = minutes_apart(len(LOOK_ALIKES) * 2)
        rows = []
        for i, stamp in enumerate(stamps):
            rows.append((LOOK_ALIKES[i // 2] if i % 2 == 0 else "bob", f"message {i}", stamp))
        if kind == "csv":
            chat = write_csv(tmp_path / "chat.csv", rows)
        elif kind == "whatsapp":
            chat = tmp_path / "chat.txt"
            chat.write_text("".join(f"15/01/2024, 09:{i:02d} - {a}: {t}\n" for i, (a, t, _) in enumerate(rows)))
        else:
            messages = [telegram_message(i, a, t, s[:19]) for i, (a, t, s) in enumerate(rows)]
            for m in messages:
                m["from_id"] = m["from"]
            chat = write_telegram(tmp_path / "result.json", messages)
        outcome = prepare(chat)
        assert outcome.error is None
        assert sorted(outcome.frame["author"].unique()) == ["alice", "bob"]
        assert sorted(outcome.frame["author_id"].unique()) == ["alice", "bob"]
        users = json.loads((tmp_path / "work-0" / "users.json").read_text(encoding="utf-8"))["users"]
        assert sorted(u["display_name"] for u in users) == ["alice", "bob"]
        assert "now read as they look" in caplog.text

    @pytest.mark.parametrize("blank", ["   ", "\u200b", "\x00", "\ufeff\u200d", "\u3164"])
    def test_a_blank_name_is_a_counted_drop(self, tmp_path, prepare, blank):
        rows = [("ann", "hi", s) for s in minutes_apart(3)]
        rows[1] = (blank, "ghost", rows[1][2])
        outcome = prepare(write_csv(tmp_path / "chat.csv", rows))
        assert outcome.dropped.get("no_author") == 1 and "ghost" not in outcome.frame["text"].tolist()

    def test_distinct_discord_accounts_with_look_alike_names_are_warned_about(self, tmp_path, prepare, caplog):
        messages = dce_messages()
        messages[1]["author"] = {"id": "77", "name": "\u200bann", "nickname": "ann\ufeff"}
        outcome = prepare(write_dce_json(tmp_path / "chat.json", messages))
        assert set(outcome.frame["author"]) == {"ann", "bob", "cat"}
        assert "more than one user id" in caplog.text and "ann" in caplog.text


class TestDepthScan:
    """The byte-level depth scan agrees with the real nesting, whatever quotes and backslashes strings hold."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=st.text(alphabet='\\"[]{}a', max_size=30), depth=st.integers(60, 68))
    def test_matches_the_parsed_depth(self, tmp_path, text, depth):
        from cloneus.data.readers.frames import MAX_JSON_DEPTH, json_depth_error

        value: list = [text]
        for _ in range(depth - 1):
            value = [value, text]
        path = tmp_path / "nested.json"
        path.write_text(json.dumps(value), encoding="utf-8")
        assert (json_depth_error(path) is not None) == (depth > MAX_JSON_DEPTH)


class TestIndexWrittenBeforeCanonicalNames:
    def test_an_opt_out_stored_under_a_look_alike_name_still_applies(self, tmp_path, tiny_model_dir, tiny_tokenizer):
        from cloneus.data.dataset import prepare_dataset
        from cloneus.data.users import UserIndex
        from tests.hostile.conftest import hostile_config

        rows = [(AUTHORS[i % 3], f"message {i}", s) for i, s in enumerate(minutes_apart(9))]
        chat = write_csv(tmp_path / "chat.csv", rows)
        users = [
            {"id": "\ufeffann", "username": "ann\u200b", "display_name": "\ufeffann", "opted_out": True},
            {"id": "bob", "username": "bob", "display_name": "bob", "message_count": 3},
            {"id": "cat", "username": "cat", "display_name": "cat", "message_count": 3},
        ]
        (tmp_path / "users.json").write_text(json.dumps({"min_share": 0.0, "users": users}), encoding="utf-8")
        index = UserIndex.load(tmp_path / "users.json")
        assert index.get("ann").opted_out and index.get("a\u200dnn") is index.get("ann")
        data = prepare_dataset(hostile_config(tmp_path, tiny_model_dir), tiny_tokenizer, chat)
        assert data.stats["dropped"].get("opted_out") == 3
        assert "ann" not in tiny_tokenizer.decode(data.train[0]["input_ids"])
