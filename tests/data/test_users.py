"""The user index: building, hand edits that survive rebuilds, validation, lookups, and the index CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cloneus.cli import main
from cloneus.data.users import User, UserIndex
from cloneus.errors import CloneusError, ConfigError, UnknownAuthorError

FIXTURES = Path(__file__).parent / "fixtures"


def _frame(counts: dict[str, int], bots: tuple[str, ...] = ()) -> pd.DataFrame:
    authors = [name for name, n in counts.items() for _ in range(n)]
    return pd.DataFrame(
        {
            "message_id": [str(i) for i in range(len(authors))],
            "author_id": [f"id-{a}" for a in authors],
            "author": [a.title() for a in authors],
            "text": ["hi"] * len(authors),
            "timestamp": pd.date_range("2024-01-01", periods=len(authors), freq="min", tz="UTC"),
            "reply_to": [None] * len(authors),
            "username": authors,
            "is_bot": [a in bots for a in authors],
        }
    )


COUNTS = {"ann": 60, "ben": 30, "cal": 9, "dee": 1}


class TestBuild:
    def test_counts_shares_and_inclusion(self):
        index = UserIndex.build(_frame(COUNTS), min_share=0.05)
        assert [u.username for u in index.users] == ["ann", "ben", "cal", "dee"]
        ann = index.get("ann")
        assert (ann.id, ann.display_name, ann.message_count, ann.share) == ("id-ann", "Ann", 60, 0.6)
        assert [u.username for u in index.trainable()] == ["ann", "ben", "cal"]

    def test_min_share_above_one_is_a_message_count(self):
        index = UserIndex.build(_frame(COUNTS), min_share=10)
        assert [u.username for u in index.trainable()] == ["ann", "ben"]

    def test_bots_from_export_and_arguments_and_exclusions(self):
        index = UserIndex.build(_frame(COUNTS, bots=("cal",)), min_share=0, exclude=["Ben"], bots=["dee"])
        assert [u.username for u in index.trainable()] == ["ann"]
        assert index.get("cal").is_bot and index.get("dee").is_bot and index.get("ben").excluded

    def test_unknown_name_in_arguments(self):
        with pytest.raises(UnknownAuthorError, match="ann"):
            UserIndex.build(_frame(COUNTS), exclude=["anne"])

    def test_rebuild_keeps_edits_and_absent_users(self):
        first = UserIndex.build(_frame({**COUNTS, "eve": 5}), min_share=0)
        first.set("ann", first_name="Annika")
        first.set("ben", excluded=True)
        first.set("eve", opted_out=True)
        first.set("cal", is_bot=True)
        again = UserIndex.build(_frame({"ann": 10, "ben": 10, "cal": 10, "dee": 10}), min_share=0, existing=first)
        assert again.get("ann").first_name == "Annika"
        assert again.get("ben").excluded and again.get("cal").is_bot
        eve = again.get("eve")  # not in the new data: kept so the opt-out is not forgotten
        assert eve.opted_out and eve.message_count == 0 and not eve.included
        assert again.get("dee").message_count == 10
        assert [u.username for u in again.trainable()] == ["ann", "dee"]

    def test_from_a_real_export(self):
        from cloneus.data.clean import clean_messages
        from cloneus.data.readers import read_chat

        frame = clean_messages(read_chat(FIXTURES / "dce_basic.json"), merge_window_minutes=0).frame
        index = UserIndex.build(frame, min_share=0)
        assert {u.display_name for u in index.users} == {"Mira", "tobyfox", "Quill"}
        assert index.get("mira_k").display_name == "Mira"


class TestPersistence:
    def test_save_load_round_trip_one_user_per_line(self, tmp_path):
        index = UserIndex.build(_frame(COUNTS), min_share=0.05)
        path = tmp_path / "users.json"
        index.save(path)
        assert UserIndex.load(path) == index
        lines = path.read_text().splitlines()
        assert sum('"username"' in line for line in lines) == len(COUNTS)

    def test_missing_file_says_how_to_build(self, tmp_path):
        with pytest.raises(CloneusError, match="index build"):
            UserIndex.load(tmp_path / "users.json")

    def test_invalid_json_names_line(self, tmp_path):
        path = tmp_path / "users.json"
        path.write_text('{\n  "users": [\n    {"id": "1",}\n  ]\n}\n')
        with pytest.raises(ConfigError, match="line 3"):
            UserIndex.load(path)

    def test_bad_field_names_file_user_and_field(self, tmp_path):
        path = tmp_path / "users.json"
        UserIndex.build(_frame(COUNTS)).save(path)
        raw = json.loads(path.read_text())
        raw["users"][1]["opted_out"] = "maybe"
        raw["users"][2]["nickname"] = "typo"
        path.write_text(json.dumps(raw))
        with pytest.raises(ConfigError) as err:
            UserIndex.load(path)
        message = str(err.value)
        assert f"{path}: user #2 (Ben), field 'opted_out'" in message
        assert "user #3 (Cal), field 'nickname'" in message

    def test_hand_edited_included_is_recomputed(self, tmp_path, caplog):
        path = tmp_path / "users.json"
        UserIndex.build(_frame(COUNTS), min_share=0.05).save(path)
        raw = json.loads(path.read_text())
        raw["users"][3]["included"] = True  # dee has 1% < 5%
        raw["users"][0]["excluded"] = True
        path.write_text(json.dumps(raw))
        index = UserIndex.load(path)
        assert not index.get("dee").included and not index.get("ann").included
        assert "Dee" in caplog.text

    def test_failed_save_leaves_old_file(self, tmp_path, monkeypatch):
        path = tmp_path / "users.json"
        UserIndex.build(_frame(COUNTS)).save(path)
        before = path.read_bytes()

        def fail(*args):
            raise OSError("disk full")

        monkeypatch.setattr("cloneus.io.os.replace", fail)
        with pytest.raises(OSError):
            UserIndex.build(_frame({"zed": 3})).save(path)
        assert path.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["users.json"]


class TestLookups:
    @pytest.fixture
    def index(self) -> UserIndex:
        index = UserIndex.build(_frame({**COUNTS, "bot": 20}, bots=("bot",)), min_share=0.05)
        index.set("cal", excluded=True)
        index.set("ben", opted_out=True)
        return index

    def test_get_by_username_display_name_or_id(self, index):
        assert index.get("ANN") is index.get("Ann") is index.get("id-ann")
        assert index.get("nobody") is None

    def test_resolve_refuses_unknown_excluded_opted_out_and_bots(self, index):
        assert index.resolve("ann").username == "ann"
        with pytest.raises(UnknownAuthorError, match="Ann"):
            index.resolve("Anne")
        for name, why in (("cal", "excluded"), ("ben", "opted out"), ("bot", "a bot")):
            with pytest.raises(UnknownAuthorError, match=why):
                index.resolve(name)

    def test_set_recomputes_inclusion(self, index):
        assert not index.get("cal").included
        assert index.set("cal", excluded=False).included
        with pytest.raises(UnknownAuthorError):
            index.set("nobody", excluded=True)

    def test_tag_fields_and_name_mapping(self, index):
        index.set("ann", first_name="Annika")
        assert index.tag_fields("ann") == {"author": "Ann", "fname": "Annika", "lauthor": "ann"}
        assert index.tag_fields("Dee")["fname"] == "Dee"
        assert index.name_mapping("{author} ({fname})") == "Ann (Annika)"

    def test_user_model_forbids_unknown_fields(self):
        with pytest.raises(ValueError, match="extra"):
            User(id="1", username="a", display_name="A", colour="red")


class TestCli:
    def test_build_prints_table_and_discord_ids(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        assert main(["index", "build", str(FIXTURES / "dce_basic.json"), "--min-share", "0.3"]) == 0
        out = capsys.readouterr().out
        assert "GUILDS_ID=900000000000000001" in out and "CHANNEL_ID=900000000000000010" in out
        assert "Mira" in out and "context (below 30.00%)" in out
        dicebot = next(line for line in out.splitlines() if line.startswith("Dicebot"))
        assert dicebot.endswith(" bot")  # bots are listed, flagged
        index = UserIndex.load(tmp_path / "config/users.json")
        assert [u.display_name for u in index.trainable()] == ["Quill"]

    def test_set_show_and_rebuild_with_alias(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        export = str(FIXTURES / "dce_basic.json")
        assert main(["index", "build", export, "--min-share", "0", "--bot", "tobyfox"]) == 0
        assert main(["index", "set", "mira", "--first-name", "Mira K", "--opt-out"]) == 0
        assert main(["index", "set", "Quill", "--exclude"]) == 0
        capsys.readouterr()
        assert main(["index", "show"]) == 0
        shown = capsys.readouterr().out
        assert "opted out" in shown and "excluded" in shown and "Mira K" in shown
        assert main(["build", export]) == 0  # the alias; keeps the edits and the min share
        index = UserIndex.load(tmp_path / "config/users.json")
        assert index.get("mira").opted_out and index.get("quill").excluded and index.get("tobyfox").is_bot
        assert index.min_share == 0
        assert main(["index", "set", "quill", "--include", "--not-bot"]) == 0
        assert UserIndex.load(tmp_path / "config/users.json").get("quill").included

    def test_build_picks_telegram_chat(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(["index", "build", str(FIXTURES / "telegram_full.json"), "--chat", "Saved Messages"]) == 0
        index = UserIndex.load(tmp_path / "config/users.json")
        assert [(u.display_name, u.message_count) for u in index.users] == [("Ivo", 1)]

    def test_errors_exit_2_and_leave_index_intact(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        output = tmp_path / "users.json"
        assert main(["index", "build", str(FIXTURES / "generic.csv"), "-o", str(output)]) == 0
        before = output.read_bytes()
        assert main(["index", "build", str(FIXTURES / "dce_truncated.json"), "-o", str(output)]) == 2
        assert main(["index", "build", str(FIXTURES / "generic.csv"), "-o", str(output), "--exclude", "zoe"]) == 2
        assert main(["index", "set", "alice", "-i", str(output)]) == 2  # nothing to change
        assert main(["index", "set", "zoe", "--exclude", "-i", str(output)]) == 2
        assert output.read_bytes() == before
        err = capsys.readouterr().err
        assert "truncated" in err and "zoe" in err and "nothing to change" in err
        assert main(["index", "show", "-i", str(tmp_path / "missing.json")]) == 2


def old_index_entries() -> list[dict]:
    """What the old scripts/build.py wrote: only the users it trained, plus the Cloneus bot ("b0"), no counts."""
    return [
        {"id": 0, "firstName": "Cloney", "authorInitial": "b0", "username": "cloneus", "displayName": "Cloneus",
         "isBot": True},
        {"id": "id-ann", "firstName": "Annie", "authorInitial": "a1", "username": "ann", "displayName": "Ann",
         "isBot": False},
        {"id": 123, "firstName": "", "authorInitial": "b1", "username": "ben", "displayName": "Ben", "isBot": False},
    ]  # fmt: skip


class TestOldBuildPyIndex:
    def test_reads_names_first_names_and_bot_flags(self, tmp_path, caplog):
        path = tmp_path / "users.json"
        path.write_text(json.dumps(old_index_entries()))
        index = UserIndex.load(path)
        assert index.needs_counts
        assert [(u.id, u.display_name, u.first_name, u.is_bot) for u in index.users] == [
            ("0", "Cloneus", "Cloney", True),
            ("id-ann", "Ann", "Annie", False),
            ("123", "Ben", None, False),
        ]
        assert "old scripts/build.py user index" in caplog.text and "cloneus index build" in caplog.text

    def test_rebuild_counts_the_chat_and_excludes_users_the_old_index_left_out(self, tmp_path):
        path = tmp_path / "users.json"
        path.write_text(json.dumps(old_index_entries()))
        index = UserIndex.build(_frame(COUNTS), min_share=0.005, existing=UserIndex.load(path))
        assert not index.needs_counts
        assert [u.display_name for u in index.trainable()] == ["Ann", "Ben"]  # ben matched by username
        assert index.get("ann").first_name == "Annie" and index.get("ann").message_count == 60
        assert index.get("cal").excluded and index.get("dee").excluded  # the old system dropped their messages

    def test_index_build_converts_the_file_in_place(self, tmp_path, capsys):
        users = tmp_path / "users.json"
        users.write_text(json.dumps(old_index_entries()))
        chat = tmp_path / "chat.csv"
        chat.write_text("username,text\n" + "ann,hello there\n" * 6 + "ben,hi\n" * 3 + "cal,yo\n")
        assert main(["index", "build", str(chat), "-o", str(users)]) == 0
        again = UserIndex.load(users)
        assert not again.needs_counts and isinstance(json.loads(users.read_text()), dict)
        assert [u.username for u in again.trainable()] == ["ann", "ben"] and again.get("cal").excluded

    def test_an_unreadable_entry_names_the_file_and_entry(self, tmp_path):
        path = tmp_path / "users.json"
        path.write_text(json.dumps([{"id": 1, "username": "a"}, "oops"]))
        with pytest.raises(ConfigError, match=r"users.json: entry #2: expected an object with the old"):
            UserIndex.load(path)
