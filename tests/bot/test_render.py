"""Discord-facing text: splitting, mention safety, emoji, throttled streaming edits."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import render
from bot.render import (
    EMPTY_REPLY,
    SAFE_MENTIONS,
    StreamEditor,
    format_clone_reply,
    render_emoji,
    render_mentions,
    split_message,
)


class TestSplitMessage:
    def test_short_text_is_one_piece(self):
        assert split_message("hello") == ["hello"]
        assert split_message("") == [""]

    def test_splits_at_last_line_break(self):
        text = "a" * 1500 + "\n" + "b" * 1000
        assert split_message(text) == ["a" * 1500, "b" * 1000]

    def test_splits_at_word_when_no_line_break(self):
        words = " ".join(["word"] * 1000)  # 4999 chars
        pieces = split_message(words)
        assert all(len(p) <= 2000 for p in pieces)
        assert all(not p.startswith(" ") and not p.endswith(" ") for p in pieces)
        assert " ".join(pieces) == words

    def test_unbroken_run_is_cut_at_limit(self):
        assert split_message("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]

    @given(st.text(alphabet="ab \n", max_size=300), st.integers(min_value=1, max_value=40))
    def test_pieces_fit_and_keep_every_non_separator_char(self, text, limit):
        pieces = split_message(text, limit)
        assert all(len(p) <= limit for p in pieces)
        strip = lambda s: s.replace(" ", "").replace("\n", "")  # noqa: E731
        assert strip("".join(pieces)) == strip(text)

    def test_bad_limit(self):
        with pytest.raises(ValueError, match="positive"):
            split_message("x", 0)


class TestMentions:
    MEMBERS = {"alice": 11, "Alice Smith": 12, "bob": 13}

    def test_present_member_becomes_mention_longest_first(self):
        out = render_mentions("hi @Alice Smith and @alice, @bob!", self.MEMBERS)
        assert out == "hi <@12> and <@11>, <@13>!"

    def test_absent_names_and_everyone_stay_text(self):
        out = render_mentions("@everyone @here @carol @bobby", self.MEMBERS)
        assert out == "@everyone @here @carol @bobby"

    def test_safe_mentions_never_ping_everyone_or_roles(self):
        assert SAFE_MENTIONS.everyone is False and SAFE_MENTIONS.roles is False
        assert SAFE_MENTIONS.to_dict()["parse"] == ["users"]


class TestEmoji:
    def test_known_emoji_rendered_unknown_kept(self):
        emojis = {"pog": "<:pog:123>"}
        assert render_emoji("so :pog: :nope: <:pog:123>", emojis) == "so <:pog:123> :nope: <:pog:123>"

    def test_clone_reply_format(self):
        assert format_clone_reply("alice", "hello") == "**[alice]** hello"


class FakeMessages:
    """Records sends and edits the way a Discord channel would store them."""

    def __init__(self):
        self.contents: list[str] = []
        self.calls: list[tuple] = []

    async def send(self, content: str) -> int:
        self.contents.append(content)
        self.calls.append(("send", len(self.contents) - 1, content))
        return len(self.contents) - 1

    async def edit(self, idx: int, content: str) -> None:
        self.contents[idx] = content
        self.calls.append(("edit", idx, content))


class TestStreamEditor:
    async def test_throttles_edits_and_final_flush_lands_everything(self, monkeypatch):
        now = [0.0]
        monkeypatch.setattr(render.time, "monotonic", lambda: now[0])
        msgs = FakeMessages()
        ed = StreamEditor(msgs.send, msgs.edit, render=lambda t: format_clone_reply("al", t))
        await ed.push("a")  # first flush immediately
        now[0] = 0.5
        await ed.push("b")  # throttled
        now[0] = 0.9
        await ed.push("c")  # throttled
        now[0] = 1.0
        await ed.push("d")  # 1 s since the last flush
        now[0] = 1.2
        await ed.push("e")
        out = await ed.finish()
        assert msgs.calls == [
            ("send", 0, "**[al]** a"),
            ("edit", 0, "**[al]** abcd"),
            ("edit", 0, "**[al]** abcde"),
        ]
        assert out == [0]

    async def test_first_message_is_edited_not_sent(self):
        msgs = FakeMessages()
        await msgs.send("thinking...")
        ed = StreamEditor(msgs.send, msgs.edit, first=0)
        await ed.push("hi")
        await ed.finish()
        assert msgs.contents == ["hi"]

    async def test_overflow_continues_in_followups(self):
        msgs = FakeMessages()
        ed = StreamEditor(msgs.send, msgs.edit, limit=10, delay=0)
        for word in "one two three four five six".split():
            await ed.push(word + " ")
        out = await ed.finish()
        assert all(len(c) <= 10 for c in msgs.contents)
        assert " ".join(msgs.contents).split() == "one two three four five six".split()
        assert out == list(range(len(msgs.contents)))

    async def test_no_edit_when_content_unchanged(self):
        msgs = FakeMessages()
        ed = StreamEditor(msgs.send, msgs.edit, delay=0)
        await ed.push("x")
        await ed.push("")
        await ed.finish()
        assert [c[0] for c in msgs.calls] == ["send"]

    async def test_empty_generation_still_answers(self):
        msgs = FakeMessages()
        ed = StreamEditor(msgs.send, msgs.edit)
        await ed.push("   ")
        await ed.finish()
        assert msgs.contents == [EMPTY_REPLY]

    async def test_finish_with_replacement_text(self):
        msgs = FakeMessages()
        ed = StreamEditor(msgs.send, msgs.edit, delay=0)
        await ed.push("draft")
        await ed.finish("final")
        assert msgs.contents == ["final"]

    async def test_real_clock_delay_is_respected(self):
        msgs = FakeMessages()
        ed = StreamEditor(msgs.send, msgs.edit, delay=0.05)
        await ed.push("a")
        await ed.push("b")
        await asyncio.sleep(0.06)
        await ed.push("c")
        assert msgs.contents == ["abc"] and len(msgs.calls) == 2
