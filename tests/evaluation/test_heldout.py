"""Which turns and moments the eval scores."""

from __future__ import annotations

from collections import Counter

from cloneus.evaluation.heldout import Moment, cloneable_conversations, reply_moments, speaker_turns

CONVERSATIONS = [
    [("a", "1"), ("a", "2"), ("b", "3"), ("x", "4")],
    [("x", "5"), ("x", "6")],
    [("b", "7"), ("a", "8"), ("a", "9"), ("a", "10"), ("c", "11")],
]


class TestSelection:
    def test_conversations_without_a_member_turn_are_dropped(self):
        assert cloneable_conversations(CONVERSATIONS, ["a", "b"]) == [CONVERSATIONS[0], CONVERSATIONS[2]]

    def test_speaker_turns_are_every_member_turn_after_the_first_message_up_to_the_limit(self):
        turns = speaker_turns(CONVERSATIONS, ["a", "b"], limit=100)
        assert turns == [Moment(0, 1, "a"), Moment(0, 2, "b"), Moment(2, 1, "a"), Moment(2, 2, "a"), Moment(2, 3, "a")]
        assert speaker_turns(CONVERSATIONS, ["a", "b"], limit=2) == turns[:2]

    def test_reply_moments_spread_over_members_in_conversation_order(self):
        moments = reply_moments(CONVERSATIONS, ["a", "b", "c"], limit=3)
        assert Counter(m.author for m in moments) == {"a": 1, "b": 1, "c": 1}
        assert moments == sorted(moments, key=lambda m: (m.conversation, m.turn))
        assert reply_moments(CONVERSATIONS, ["a", "b", "c"], limit=3) == moments, "the pick is seeded"

    def test_reply_moments_take_all_when_the_limit_is_larger(self):
        assert len(reply_moments(CONVERSATIONS, ["a", "b"], limit=50)) == 5
