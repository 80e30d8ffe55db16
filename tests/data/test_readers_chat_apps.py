"""WhatsApp and Telegram readers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cloneus.data.readers import read_chat
from cloneus.errors import DataFormatError

FIXTURES = Path(__file__).parent / "fixtures"


class TestWhatsApp:
    def test_ios_messages_multiline_and_dropped_lines(self):
        frame = read_chat(FIXTURES / "whatsapp_ios.txt")
        assert frame["author"].tolist() == ["Nadia", "Jonas", "Lea"]
        assert frame["text"].tolist() == [
            "who has the setlist",
            "me, sending now\nit has the new song at the end\n\nand the cover",
            "morning!! time: 7pm ok?",
        ]
        assert frame.attrs["dropped"] == {"system": 2, "media": 2, "deleted": 1}

    def test_ios_day_first_with_seconds(self):
        frame = read_chat(FIXTURES / "whatsapp_ios.txt")
        assert frame["timestamp"].iloc[0] == pd.Timestamp("2024-01-15T21:14:03Z")
        assert frame["message_id"].iloc[0] == "3"  # the line number

    def test_android_us_twelve_hour_clock_month_first(self):
        frame = read_chat(FIXTURES / "whatsapp_android_us.txt")
        assert frame["author"].tolist() == ["Sam", "Riley", "Sam"]
        assert frame["timestamp"].tolist() == [
            pd.Timestamp("2024-01-15T21:07:00Z"),
            pd.Timestamp("2024-01-16T00:01:00Z"),  # 12:01 AM
            pd.Timestamp("2024-01-16T12:30:00Z"),  # 12:30 PM
        ]
        assert frame.attrs["dropped"] == {"system": 2, "media": 1}

    def test_ambiguous_dates_take_the_order_that_runs_forwards(self, tmp_path):
        day_first = read_chat(FIXTURES / "whatsapp_android_ambiguous.txt")["timestamp"].dt.strftime("%m-%d")
        assert day_first.tolist() == ["02-01", "02-02", "03-01"]
        path = tmp_path / "chat.txt"
        path.write_text("02/01/2024, 18:00 - Ana: hi\n02/02/2024, 18:05 - Ben: hey\n03/01/2024, 09:00 - Ana: later\n")
        month_first = read_chat(path)["timestamp"].dt.strftime("%m-%d")
        assert month_first.tolist() == ["02-01", "02-02", "03-01"]

    def test_impossible_date_names_line(self, tmp_path):
        path = tmp_path / "chat.txt"
        path.write_text("15/01/2024, 18:00 - Ana: hi\n15/13/2024, 18:05 - Ben: hey\n")
        with pytest.raises(DataFormatError, match="15/13/2024") as err:
            read_chat(path)
        assert err.value.line == 2

    def test_non_utf8(self, tmp_path):
        path = tmp_path / "chat.txt"
        data = b"15/01/2024, 18:00 - Ana: hi\n15/01/2024, 18:01 - Ana: caf\xe9\n"
        path.write_bytes(data)
        with pytest.raises(DataFormatError, match=f"offset {data.index(0xE9)}") as err:
            read_chat(path)
        assert err.value.line == 2


class TestTelegram:
    def test_single_chat(self):
        frame = read_chat(FIXTURES / "telegram_single.json")
        assert frame["author"].tolist() == ["Ivo", "Pia", "Ivo"]
        assert frame["author_id"].tolist() == ["user1", "user2", "user1"]
        assert frame["text"].tolist() == ["catan tonight?", "only if I get sheep", "deal"]  # entities flattened
        assert frame["reply_to"].tolist() == [None, "2", None]
        assert frame.attrs["dropped"] == {"system": 1, "no_author": 1}
        assert frame.attrs["chat"] == "Board games"

    def test_unixtime_preferred_and_local_date_as_utc(self):
        stamps = read_chat(FIXTURES / "telegram_single.json")["timestamp"]
        assert stamps.iloc[0] == pd.Timestamp(1704913260, unit="s", tz="UTC")
        assert stamps.iloc[2] == pd.Timestamp("2024-01-10T19:04:00Z")  # no date_unixtime

    def test_full_export_reads_largest_chat_or_the_named_one(self):
        assert read_chat(FIXTURES / "telegram_full.json")["text"].tolist() == ["catan tonight?", "sure"]
        saved = read_chat(FIXTURES / "telegram_full.json", chat="Saved Messages")
        assert saved["text"].tolist() == ["note to self"]
        by_id = read_chat(FIXTURES / "telegram_full.json", chat="1")
        assert by_id["text"].tolist() == ["note to self"]

    def test_unknown_chat_lists_chats(self):
        with pytest.raises(DataFormatError, match="Board games"):
            read_chat(FIXTURES / "telegram_full.json", chat="Nope")

    def test_truncated(self, tmp_path):
        path = tmp_path / "result.json"
        path.write_bytes((FIXTURES / "telegram_single.json").read_bytes()[:700])
        with pytest.raises(DataFormatError, match="truncated"):
            read_chat(path)

    def test_bad_date_names_field(self, tmp_path):
        export = json.loads((FIXTURES / "telegram_single.json").read_text())
        export["messages"][4]["date"] = "soon"
        path = tmp_path / "result.json"
        path.write_text(json.dumps(export))
        with pytest.raises(DataFormatError, match="soon") as err:
            read_chat(path)
        assert err.value.field == "messages[4].date"
