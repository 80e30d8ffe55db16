"""Cleaning rules, each on and off, and the invariants of burst merging."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from cloneus.config import CleaningConfig
from cloneus.data.clean import clean_messages
from cloneus.data.readers import read_chat

FIXTURES = Path(__file__).parent / "fixtures"
START = pd.Timestamp("2024-01-01T12:00:00Z")


def _frame(rows: list[tuple], **attrs) -> pd.DataFrame:
    """rows: (author_id, text, minutes after START[, is_bot])."""
    frame = pd.DataFrame(
        {
            "message_id": [str(i) for i in range(len(rows))],
            "author_id": [r[0] for r in rows],
            "author": [r[0].title() for r in rows],
            "text": [r[1] for r in rows],
            "timestamp": [START + pd.Timedelta(minutes=r[2]) for r in rows],
            "reply_to": [None] * len(rows),
            "is_bot": [r[3] if len(r) > 3 else False for r in rows],
        }
    )
    frame.attrs = attrs
    return frame


def _texts(frame: pd.DataFrame, **kwargs) -> list[str]:
    return clean_messages(frame, CleaningConfig(**kwargs), merge_window_minutes=0).frame["text"].tolist()


class TestDropRules:
    def test_commands_dropped_but_not_lookalikes(self):
        frame = _frame(
            [
                ("a", "!roll 1d20", 0),
                ("b", "/shrug", 1),
                ("a", "  !play never gonna", 2),
                ("b", "!!! no way", 3),
                ("a", "/etc/fstab is broken", 4),
                ("b", "! spaced", 5),
            ]
        )
        result = clean_messages(frame, CleaningConfig(), merge_window_minutes=0)
        assert result.frame["text"].tolist() == ["!!! no way", "/etc/fstab is broken", "! spaced"]
        assert result.dropped["command"] == 3

    def test_command_prefixes_configurable(self):
        frame = _frame([("a", "!roll", 0), ("b", ".roll", 1), ("a", "/shrug", 2)])
        assert _texts(frame, command_prefixes=["."]) == ["!roll", "/shrug"]
        assert _texts(frame, command_prefixes=[]) == ["!roll", ".roll", "/shrug"]

    def test_bots_dropped_unless_disabled(self):
        frame = _frame([("a", "hi", 0), ("bot", "beep", 1, True)])
        result = clean_messages(frame, CleaningConfig(), merge_window_minutes=0)
        assert result.frame["author_id"].tolist() == ["a"]
        assert result.dropped["bot"] == 1
        assert _texts(frame, drop_bots=False) == ["hi", "beep"]

    def test_empty_dropped_unless_disabled(self):
        frame = _frame([("a", "hi", 0), ("b", "   ", 1), ("a", "", 2)])
        result = clean_messages(frame, CleaningConfig(), merge_window_minutes=0)
        assert result.frame["text"].tolist() == ["hi"]
        assert result.dropped["empty"] == 2
        assert _texts(frame, drop_empty=False) == ["hi", "", ""]

    def test_reader_drops_are_reported_too(self):
        result = clean_messages(read_chat(FIXTURES / "dce_basic.json"))
        assert result.dropped == {
            "system": 2,
            "bot": 1,
            "command": 1,
            "attachment_only": 1,
            "empty": 0,
            "merged": 1,
        }


class TestTextRewrites:
    def test_cdn_links_stripped_and_attachment_only_counted(self):
        frame = _frame(
            [
                ("a", "https://cdn.discordapp.com/attachments/1/2/cat.png", 0),
                ("b", "look https://media.discordapp.net/attachments/1/2/x.gif?width=3", 1),
                ("a", "https://example.com/page", 2),
            ]
        )
        result = clean_messages(frame, CleaningConfig(), merge_window_minutes=0)
        assert result.frame["text"].tolist() == ["look", "https://example.com/page"]
        assert result.dropped["attachment_only"] == 1
        assert _texts(frame, strip_cdn_attachments=False)[0].startswith("https://cdn.discordapp.com/")

    def test_mentions_channels_and_emoji_resolved(self):
        frame = _frame(
            [
                ("11", "hi", 0),
                ("22", "<@11> and <@!11>, <@33>, <@404>, <@&5> in <#7> <:pog:123> <a:dance:456>", 1),
            ],
            user_names={"33": "Zed"},
            channels={"7": "general"},
        )
        assert _texts(frame)[1] == "@11 and @11, @Zed, <@404>, <@&5> in #general :pog: :dance:"
        assert _texts(frame, resolve_mentions=False)[1].startswith("<@11> and <@!11>")

    def test_mentions_use_display_names_from_the_frame(self):
        frame = _frame([("11", "hi", 0), ("22", "<@11> hey", 1)])
        frame["author"] = ["Mira", "Toby"]
        assert _texts(frame)[1] == "@Mira hey"

    def test_blank_line_runs_collapsed(self):
        frame = _frame([("a", "one\n\n\n\ntwo\n \n\t\nthree\nfour  \n\n", 0)])
        assert _texts(frame) == ["one\n\ntwo\n\nthree\nfour"]
        assert _texts(frame, collapse_blank_lines=False) == ["one\n\n\n\ntwo\n \n\t\nthree\nfour"]

    def test_huge_message_kept_intact(self):
        huge = "y" * 200_000
        assert _texts(_frame([("a", huge, 0)])) == [huge]


class TestOrderAndNames:
    def test_out_of_order_sorted_stably(self):
        frame = _frame([("a", "third", 10), ("b", "first", 0), ("a", "tie-1", 5), ("b", "tie-2", 5)])
        assert _texts(frame) == ["first", "tie-1", "tie-2", "third"]

    def test_exported_out_of_order_with_mixed_offsets(self):
        frame = read_chat(FIXTURES / "generic_out_of_order.csv")
        assert frame["text"].iloc[0] == "third in time"  # the reader keeps file order
        out = clean_messages(frame, merge_window_minutes=0).frame
        expected = ["first in time", "second (same instant as the next)", "second too", "third in time"]
        assert out["text"].tolist() == expected
        assert out["timestamp"].iloc[-1] == pd.Timestamp("2024-03-01T11:10:00Z")

    def test_naive_and_other_zones_become_utc(self):
        frame = _frame([("a", "x", 0), ("b", "y", 1)])
        frame["timestamp"] = frame["timestamp"].dt.tz_convert("Europe/Berlin")
        out = clean_messages(frame, merge_window_minutes=0).frame
        assert str(out["timestamp"].dtype) == "datetime64[ns, UTC]"
        assert out["timestamp"].iloc[0] == START
        frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)  # Berlin wall time, now naive
        naive = clean_messages(frame, merge_window_minutes=0).frame
        assert naive["timestamp"].iloc[0] == pd.Timestamp("2024-01-01T13:00:00Z")

    def test_author_ids_take_latest_display_name(self):
        frame = _frame([("a", "x", 0), ("b", "y", 1), ("a", "z", 2)])
        frame["author"] = ["Old Name", "Bee", "New Name"]
        unified = clean_messages(frame, merge_window_minutes=0)
        assert unified.frame["author"].tolist() == ["New Name", "Bee", "New Name"]
        kept = clean_messages(frame, CleaningConfig(unify_author_names=False), merge_window_minutes=0)
        assert kept.frame["author"].tolist() == ["Old Name", "Bee", "New Name"]

    def test_attrs_kept(self):
        result = clean_messages(read_chat(FIXTURES / "dce_basic.json"))
        assert result.frame.attrs["guild"]["name"] == "Tavern"
        assert result.frame.attrs["dropped"] == result.dropped


class TestMerge:
    def test_burst_within_window_joined_keeping_first_id_and_time(self):
        frame = _frame([("a", "one", 0), ("a", "two", 5), ("a", "three", 11), ("b", "other", 12), ("a", "four", 13)])
        frame.loc[0, "reply_to"] = "99"
        result = clean_messages(frame, merge_window_minutes=7)
        out = result.frame
        assert out["text"].tolist() == ["one\ntwo\nthree", "other", "four"]
        assert out["message_id"].tolist() == ["0", "3", "4"]
        assert out["timestamp"].iloc[0] == START
        assert out["reply_to"].iloc[0] == "99"
        assert result.dropped["merged"] == 2

    def test_replies_to_folded_messages_point_at_the_burst(self):
        frame = _frame([("a", "one", 0), ("a", "two", 1), ("b", "re two", 2), ("c", "re b", 3)])
        frame["reply_to"] = [None, None, "1", "2"]
        out = clean_messages(frame, merge_window_minutes=7).frame
        assert out["message_id"].tolist() == ["0", "2", "3"]
        assert out["reply_to"].tolist() == [None, "0", "2"]

    def test_gap_beyond_window_splits(self):
        frame = _frame([("a", "one", 0), ("a", "two", 8)])
        assert clean_messages(frame, merge_window_minutes=7).frame["text"].tolist() == ["one", "two"]
        assert clean_messages(frame, merge_window_minutes=0).frame["text"].tolist() == ["one", "two"]

    def test_without_timestamps_consecutive_messages_merge(self):
        frame = _frame([("a", "one", 0), ("a", "two", 1), ("b", "three", 2)])
        frame["timestamp"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
        assert clean_messages(frame).frame["text"].tolist() == ["one\ntwo", "three"]

    @settings(max_examples=60, deadline=None)
    @given(
        rows=st.lists(
            st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20), st.text("xyz ", min_size=1, max_size=5)),
            min_size=1,
            max_size=40,
        ),
        window=st.integers(0, 15),
    )
    def test_merge_invariants(self, rows, window):
        minutes, timeline = 0, []
        for author, gap, text in rows:
            minutes += gap
            timeline.append((author, f"{text.strip() or 'x'}", minutes))
        frame = _frame(timeline)
        result = clean_messages(frame, CleaningConfig(command_prefixes=[]), merge_window_minutes=window)
        out = result.frame
        # Nothing is lost or reordered: the texts, in order, are the input texts.
        assert "\n".join(out["text"]) == "\n".join(t for _, t, _ in timeline)
        assert len(out) + result.dropped["merged"] == len(frame)
        # Each output row is the first message of its burst; a burst is one author with gaps within the window.
        firsts = [int(m) for m in out["message_id"]]
        assert out["timestamp"].tolist() == frame["timestamp"].iloc[firsts].tolist()
        stamps, authors = frame["timestamp"], frame["author_id"]
        bounds = [*firsts[1:], len(frame)]
        for start, end in zip(firsts, bounds, strict=True):
            assert authors.iloc[start:end].nunique() == 1
            assert (stamps.iloc[start:end].diff().dropna() <= pd.Timedelta(minutes=window)).all()
        # Bursts end where the author changes or the silence exceeds the window.
        for prev_end, start in zip(bounds[:-1], firsts[1:], strict=True):
            same_author = authors.iloc[start] == authors.iloc[prev_end - 1]
            assert (
                not same_author
                or window == 0
                or stamps.iloc[start] - stamps.iloc[prev_end - 1] > pd.Timedelta(minutes=window)
            )
