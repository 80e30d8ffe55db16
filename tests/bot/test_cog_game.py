"""`/clone game` end to end through the fake Discord: rounds posted with buttons, votes by button and select,
reveal when every player voted or on timeout, scores and statistics, and which real messages may be used."""

from __future__ import annotations

import json
import random
from pathlib import Path

from bot.game import compute_stats
from cloneus.evaluation.suite import HUMAN_FILE, human_judgements
from tests.bot.test_cog_clone import until

ROUND_S = 60.0  # long enough for a loaded machine: these rounds close because everyone voted


def _game(drv):
    return drv.bot.get_cog("GameCog").game


async def chat(drv, lines: list[tuple[str, str]]) -> list[int]:
    """Members post messages; returns their ids once the bot has stored them as context."""
    ids = [int((await drv.post_message(text, user=user))["id"]) for user, text in lines]

    async def stored():
        rows = await drv.bot.store.recent_context(drv.fake.channel_ids["general"], 100)
        return {r.message_id for r in rows} >= set(ids)

    await until(stored)
    return ids


def _round_message(drv, number: int):
    for m in drv.fake.messages.values():
        if any(e.get("title", "").startswith(f"Real or clone? Round {number}/") for e in m["embeds"]):
            return m
    return None


def _revealed(message: dict) -> bool:
    return any(f["name"] == "Answer" for e in message["embeds"] for f in e.get("fields", []))


async def _current_round(drv, number: int):
    """The posted round `number` and its stored truth (looked up by the message the round was posted as)."""
    message = await drv.wait_for(lambda: _round_message(drv, number), timeout=90)
    return message, await until(lambda: _round_of(drv, int(message["id"])))


async def _round_of(drv, message_id: int):
    for round_id in list(_game(drv)._open):
        rnd = await drv.bot.store.get_round(round_id)
        if rnd is not None and rnd.message_id == message_id:
            return rnd
    return None


async def vote(drv, message: dict, rnd, user: str, real: bool, author: str | None = None) -> None:
    rec = await drv.click(int(message["id"]), f"game:{rnd.id}:{'real' if real else 'clone'}", user=user)
    await rec.answered()
    assert rec.ephemeral and "Vote recorded" in rec.text
    if author is not None:
        rec = await drv.click(int(message["id"]), f"game:{rnd.id}:who", user=user, values=[author])
        await rec.answered()


LINES = [
    ("alice", "anyone up for pizza tonight?"),
    ("bob", "only if it has pineapple"),
    ("carol", "pineapple on pizza is a crime"),
    ("alice", "bob has a point though"),
    ("bob", "thank you alice"),
    ("carol", "you are both wrong"),
]


class TestGame:
    async def test_three_rounds_with_buttons_select_reveal_scores_and_stats(self, drv):
        ids = await chat(drv, LINES)
        game = _game(drv)
        game.round_seconds = ROUND_S
        game.rng = random.Random(3)
        rec = await drv.slash("clone game play", rounds=3, user="bob")
        await rec.answered(timeout=60)
        assert "3 round(s)" in rec.text

        # Round 1: the host alone is every player so far, so the round closes as soon as bob votes (right).
        message, rnd = await _current_round(drv, 1)
        assert rnd.source_message_id in ids and rnd.text
        assert rnd.author.casefold() in message["embeds"][0]["description"].casefold()
        await vote(drv, message, rnd, "bob", rnd.is_real)
        await drv.wait_for(lambda: _revealed(drv.fake.messages[int(message["id"])]), timeout=10)
        assert drv.fake.messages[int(message["id"])]["components"] == []

        # Round 2: carol joins (wrong); the round waits for bob, then closes.
        message, rnd = await _current_round(drv, 2)
        await vote(drv, message, rnd, "carol", not rnd.is_real)
        assert not _revealed(drv.fake.messages[int(message["id"])])
        await vote(drv, message, rnd, "bob", rnd.is_real)
        await drv.wait_for(lambda: _revealed(drv.fake.messages[int(message["id"])]), timeout=10)

        # Round 3 hides the name: bob calls it and names the author; carol gets both wrong.
        message, rnd = await _current_round(drv, 3)
        assert rnd.attribution and rnd.author not in message["embeds"][0]["description"]
        options = [
            o["value"] for row in message["components"] for c in row["components"] for o in c.get("options", [])
        ]
        assert rnd.author in options
        await vote(drv, message, rnd, "bob", rnd.is_real, author=rnd.author)
        assert not _revealed(drv.fake.messages[int(message["id"])])
        wrong = next(o for o in options if o != rnd.author)
        await vote(drv, message, rnd, "carol", not rnd.is_real, author=wrong)
        await drv.wait_for(lambda: _revealed(drv.fake.messages[int(message["id"])]), timeout=10)

        board = await drv.wait_for(
            lambda: next((m for m in drv.fake.messages.values() if m["content"].startswith("🎭 Game over")), None)
        )
        bob, carol = drv.fake.user_ids["bob"], drv.fake.user_ids["carol"]
        assert f"<@{bob}>: 4" in board["content"] and f"<@{carol}>: 0" in board["content"]

        played = await drv.bot.store.revealed_rounds(drv.fake.guild_id)
        assert len({r.source_message_id for r, _ in played}) == 3
        stats = compute_stats(played)
        assert stats.attribution_votes == 2 and stats.attribution_accuracy == 0.5
        stats_rec = await drv.slash("clone game stats", user="alice")
        await stats_rec.answered()
        assert "fooled" in stats_rec.text and "50% of 2 right" in stats_rec.text

        status = await drv.slash("model status")
        await status.answered()
        field = next(f for f in status.original["embeds"][0]["fields"] if f["name"].startswith("Real or clone?"))
        clone_votes = sum(len(v) for r, v in played if not r.is_real)
        assert f"of {clone_votes} votes" in field["value"]

        # The eval report reads the same rates from the served checkpoint (the file is removed again: the tiny
        # checkpoint is shared by the whole session).
        fidelity = Path(drv.bot.engine.status().checkpoint) / HUMAN_FILE
        try:
            written = json.loads(fidelity.read_text())
            assert written["clone_votes"] == clone_votes and written["model"] == "tiny"
            human = human_judgements(fidelity.parent)
            assert human["fooled_rate"] == written["fooled_rate"] and human["judgements"] == clone_votes
        finally:
            fidelity.unlink(missing_ok=True)

    async def test_used_opted_out_and_bot_messages_are_never_played(self, drv):
        ids = await chat(drv, LINES)
        game = _game(drv)
        guild = drv.bot.get_guild(drv.fake.guild_id)
        channel_id = drv.fake.channel_ids["general"]
        speak = await drv.slash("clone speak", author="carol", user="bob", max_new_tokens=3)
        await speak.answered()
        assert speak.original_id not in {c.message_id for c in await game.candidates(guild, channel_id, None)}

        game.round_seconds = 0.5  # nobody votes: the round is revealed when it times out
        rec = await drv.slash("clone game play", rounds=1, author="carol", user="bob")
        await rec.answered(timeout=60)
        await drv.wait_for(lambda: _round_message(drv, 1), timeout=30)
        first = await until(lambda: _one_revealed(drv))
        carol_ids = {ids[i] for i, (u, _) in enumerate(LINES) if u == "carol"}
        assert first.source_message_id in carol_ids
        remaining = {c.message_id for c in await game.candidates(guild, channel_id, "carol")}
        assert first.source_message_id not in remaining and remaining < carol_ids

        optout = await drv.slash("clone optout", user="alice")
        await optout.answered()
        authors = {c.author_id for c in await game.candidates(guild, channel_id, None)}
        assert drv.fake.user_ids["alice"] not in authors

    async def test_nothing_left_to_play_is_explained(self, drv):
        rec = await drv.slash("clone game play", rounds=2, author="alice", user="bob")
        await rec.answered(timeout=60)
        assert "no unused real messages by alice" in rec.text


async def _one_revealed(drv):
    rounds = await drv.bot.store.revealed_rounds(drv.fake.guild_id)
    return rounds[0][0] if rounds else None
