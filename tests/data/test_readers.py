"""Readers of Discord and CSV exports, format detection, and the errors bad files get."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from cloneus.data.messages import COLUMNS
from cloneus.data.readers import detect_format, read_chat
from cloneus.errors import DataFormatError

FIXTURES = Path(__file__).parent / "fixtures"


def _dce_export(messages: list[dict]) -> dict:
    return {"guild": {"id": "1", "name": "g"}, "channel": {"id": "2", "name": "c"}, "messages": messages}


def _dce_message(i: int, text: str = "hello", author: str = "7") -> dict:
    return {
        "id": str(1000 + i),
        "type": "Default",
        "timestamp": f"2024-01-01T10:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
        "content": text,
        "author": {"id": author, "name": f"user{author}", "nickname": None, "isBot": False},
        "attachments": [],
    }


class TestDetectFormat:
    @pytest.mark.parametrize(
        ("name", "fmt"),
        [
            ("dce_basic.json", "dce_json"),
            ("dce_export.csv", "dce_csv"),
            ("generic.csv", "generic_csv"),
            ("generic_no_timestamp.csv", "generic_csv"),
            ("whatsapp_ios.txt", "whatsapp"),
            ("whatsapp_android_us.txt", "whatsapp"),
            ("telegram_single.json", "telegram"),
            ("telegram_full.json", "telegram"),
        ],
    )
    def test_detects_format_from_content(self, name, fmt, tmp_path):
        renamed = tmp_path / "export.dat"  # the extension must not matter
        renamed.write_bytes((FIXTURES / name).read_bytes())
        assert detect_format(renamed) == fmt

    def test_unknown_format_lists_known_ones(self):
        with pytest.raises(DataFormatError) as err:
            read_chat(FIXTURES / "unrelated.csv")
        message = str(err.value)
        for known in ("DiscordChatExporter JSON", "generic CSV", "WhatsApp", "Telegram"):
            assert known in message

    def test_json_array_is_not_an_export(self, tmp_path):
        path = tmp_path / "list.json"
        path.write_text('[{"a": 1}]')
        with pytest.raises(DataFormatError, match="array"):
            read_chat(path)

    def test_empty_file(self):
        with pytest.raises(DataFormatError, match="empty") as err:
            read_chat(FIXTURES / "empty.csv")
        assert err.value.path == FIXTURES / "empty.csv"

    def test_missing_file(self, tmp_path):
        with pytest.raises(DataFormatError, match="not found"):
            read_chat(tmp_path / "nope.json")


class TestDceJson:
    def test_canonical_columns_and_dtypes(self):
        frame = read_chat(FIXTURES / "dce_basic.json")
        assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
        assert {"username", "is_bot"} <= set(frame.columns)
        assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"

    def test_system_messages_dropped_and_counted(self):
        frame = read_chat(FIXTURES / "dce_basic.json")
        assert "1001" not in set(frame["message_id"])  # GuildMemberJoin
        assert "1006" not in set(frame["message_id"])  # ChannelPinnedMessage
        assert frame.attrs["dropped"] == {"system": 2}

    def test_author_is_nickname_else_name(self):
        frame = read_chat(FIXTURES / "dce_basic.json").set_index("message_id")
        assert frame.loc["1002", ["author", "username"]].tolist() == ["Mira", "mira_k"]
        assert frame.loc["1003", ["author", "username"]].tolist() == ["tobyfox", "tobyfox"]
        assert bool(frame.loc["1005", "is_bot"]) is True

    def test_reply_reference_and_utc_offset(self):
        frame = read_chat(FIXTURES / "dce_basic.json").set_index("message_id")
        assert frame.loc["1003", "reply_to"] == "1002"
        assert frame.loc["1002", "reply_to"] is None
        # "2024-02-01T20:03:00+02:00" is 18:03 UTC.
        assert frame.loc["1003", "timestamp"] == pd.Timestamp("2024-02-01T18:03:00Z")

    def test_attachment_urls_appended_to_text(self):
        frame = read_chat(FIXTURES / "dce_basic.json").set_index("message_id")
        assert frame.loc["1007", "text"] == "https://cdn.discordapp.com/attachments/9/5/map.png"
        assert frame.loc["1008", "text"].endswith("\nhttps://cdn.discordapp.com/attachments/9/6/notes.txt")

    def test_guild_channel_and_mentioned_names_in_attrs(self):
        attrs = read_chat(FIXTURES / "dce_basic.json").attrs
        assert attrs["guild"]["id"] == "900000000000000001"
        assert attrs["channels"] == {"900000000000000010": "general"}
        assert attrs["user_names"]["44"] == "Ghosty"

    def test_truncated_json_names_the_message(self):
        with pytest.raises(DataFormatError, match="truncated") as err:
            read_chat(FIXTURES / "dce_truncated.json")
        assert err.value.field.startswith("messages[")

    def test_invalid_utf8_names_byte_offset_and_line(self, tmp_path):
        data = (FIXTURES / "dce_basic.json").read_bytes().replace(b"brb", b"br\xffb")
        path = tmp_path / "bad.json"
        path.write_bytes(data)
        with pytest.raises(DataFormatError, match="0xff") as err:
            read_chat(path)
        offset = data.index(b"\xff")
        assert f"offset {offset}" in str(err.value)
        assert err.value.line == data[:offset].count(b"\n") + 1

    def test_missing_author_id_names_field(self, tmp_path):
        message = _dce_message(0)
        del message["author"]["id"]
        path = tmp_path / "x.json"
        path.write_text(json.dumps(_dce_export([_dce_message(1), message])))
        with pytest.raises(DataFormatError) as err:
            read_chat(path)
        assert err.value.field == "messages[1].author.id"

    def test_bad_timestamp_names_field(self, tmp_path):
        message = _dce_message(1)
        message["timestamp"] = "yesterday"
        path = tmp_path / "x.json"
        path.write_text(json.dumps(_dce_export([_dce_message(0), message])))
        with pytest.raises(DataFormatError, match="yesterday") as err:
            read_chat(path)
        assert err.value.field == "messages[1].timestamp"

    def test_zero_messages(self, tmp_path):
        path = tmp_path / "x.json"
        path.write_text(json.dumps(_dce_export([])))
        with pytest.raises(DataFormatError, match="no messages"):
            read_chat(path)

    def test_bom_and_huge_message_kept_intact(self, tmp_path):
        huge = "word " * 40_000  # 200k characters
        path = tmp_path / "x.json"
        path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_dce_export([_dce_message(0, huge)])).encode())
        frame = read_chat(path)
        assert frame["text"].iloc[0] == huge

    def test_streams_without_holding_a_parsed_copy(self, tmp_path):
        """Peak Python memory stays a small multiple of the file size (a full json.load alone is ~5x)."""
        path = tmp_path / "big.json"
        messages = [_dce_message(i, f"message number {i} " * 3, author=str(i % 50)) for i in range(5_000)]
        path.write_text(json.dumps(_dce_export(messages)))
        size = path.stat().st_size
        tracemalloc.start()
        frame = read_chat(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(frame) == 5_000
        assert peak < 3.5 * size, f"peak {peak} bytes for a {size}-byte file"


class TestDceCsv:
    def test_reads_rows_with_attachments_and_multiline_content(self):
        frame = read_chat(FIXTURES / "dce_export.csv")
        assert frame["author"].tolist() == ["mira_k", "tobyfox", "quill", "quill"]  # discriminators dropped
        assert frame["author_id"].tolist() == ["11", "22", "33", "33"]
        assert frame["text"].iloc[1] == "yes!!\nsnacks on me"
        assert frame["text"].iloc[2].split("\n") == [
            "https://cdn.discordapp.com/attachments/9/5/map.png",
            "https://cdn.discordapp.com/attachments/9/5/key.png",
        ]
        assert frame["text"].iloc[3] == "here is the map\nhttps://example.com/map.png"
        assert frame["timestamp"].iloc[3] == pd.Timestamp("2024-02-01T18:06:00Z")


class TestGenericCsv:
    def test_case_insensitive_headers_and_na_strings_kept(self):
        frame = read_chat(FIXTURES / "generic.csv")
        assert frame["author"].tolist() == ["alice", "bob", "alice", "bob"]
        assert frame["text"].tolist() == ["first message", "None", "NA", "a line, with a comma"]

    def test_usernames_differing_only_in_case_are_one_member(self, tmp_path):
        from cloneus.config import CleaningConfig
        from cloneus.data.clean import clean_messages
        from cloneus.data.users import UserIndex

        path = tmp_path / "irc.csv"
        rows = [("Dr_Willis", "try a live usb"), ("bob", "ok"), ("dr_willis", "or boot-repair"), ("Bob", "thanks")]
        rows += [("DR_willis", "good luck")]
        path.write_text(
            "username,text,timestamp\n" + "".join(f"{a},{t},2024-01-01 10:0{i}\n" for i, (a, t) in enumerate(rows))
        )
        frame = read_chat(path)
        assert frame["author_id"].tolist() == ["dr_willis", "bob", "dr_willis", "bob", "dr_willis"]
        assert frame["author"].tolist() == [a for a, _ in rows], "the text's own spelling is kept until cleaning"
        cleaned = clean_messages(frame, CleaningConfig(), merge_window_minutes=0).frame
        assert set(cleaned["author"]) == {"DR_willis", "Bob"}, "each member shows under their latest spelling"
        index = UserIndex.build(cleaned, min_share=0.0)
        assert [(u.id, u.display_name, u.message_count) for u in index.users] == [
            ("dr_willis", "DR_willis", 3),
            ("bob", "Bob", 2),
        ]
        assert index.get("dr_WILLIS") is index.users[0]

    def test_mixed_timezones_normalised_to_utc(self):
        stamps = read_chat(FIXTURES / "generic.csv")["timestamp"]
        assert str(stamps.dtype) == "datetime64[ns, UTC]"
        expected = ["2024-01-01T10:00:00Z", "2024-01-01T10:05:00Z", "2024-01-01T10:06:00Z", "2024-01-01T10:30:00Z"]
        assert stamps.tolist() == [pd.Timestamp(s) for s in expected]

    def test_without_timestamps_gives_nat(self):
        frame = read_chat(FIXTURES / "generic_no_timestamp.csv")
        assert frame["timestamp"].isna().all()
        assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"

    def test_missing_column_named(self):
        with pytest.raises(DataFormatError, match="text") as err:
            read_chat(FIXTURES / "generic_missing_column.csv")
        assert err.value.line == 1

    def test_empty_usernames_dropped_and_counted(self, caplog):
        frame = read_chat(FIXTURES / "generic_empty_username.csv")
        assert frame["author"].tolist() == ["alice", "bob"]
        assert frame.attrs["dropped"] == {"no_author": 2}
        assert "line 3" in caplog.text

    def test_bad_timestamp_names_physical_line(self):
        # The record before it spans two lines, so the bad value sits on line 5, not 4.
        with pytest.raises(DataFormatError, match="not a date") as err:
            read_chat(FIXTURES / "generic_bad_timestamp.csv")
        assert (err.value.line, err.value.field) == (5, "timestamp")

    def test_non_utf8_byte_reported_with_offset(self):
        data = (FIXTURES / "generic_latin1.csv").read_bytes()
        with pytest.raises(DataFormatError, match="not valid UTF-8") as err:
            read_chat(FIXTURES / "generic_latin1.csv")
        offset = data.index(b"\xe9")
        assert f"offset {offset}" in str(err.value)
        assert err.value.line == 3

    def test_header_only_has_no_messages(self):
        with pytest.raises(DataFormatError, match="no messages"):
            read_chat(FIXTURES / "header_only.csv")

    def test_unterminated_quote(self, tmp_path):
        path = tmp_path / "x.csv"
        path.write_text('username,text\nalice,"never closed\n')
        with pytest.raises(DataFormatError, match="malformed CSV"):
            read_chat(path)

    def test_huge_message_kept_intact(self, tmp_path):
        huge = "x" * 200_000
        path = tmp_path / "x.csv"
        path.write_text(f"username,text\nalice,{huge}\nbob,short\n")
        assert read_chat(path)["text"].tolist() == [huge, "short"]
