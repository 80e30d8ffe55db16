""" "Real or clone?": a member's name over either one of their real messages or the clone's reply to that
message's real context, and the players guess which (and in attribution rounds, who wrote it).

Where real messages come from: the channel's stored context (what the bot has seen and the history it seeded),
never a clone reply, never a bot's message, never a member who opted out, and never one a game in this guild
already used (the store's unique index enforces it). A clone round imitates the same member after the same
history, so the two kinds differ only in who wrote the text. Real messages are shown only in the channel they
came from, and the statistics never quote them.

A round is revealed when it times out (`round_seconds`) or when everyone who has played in this game so far
(the host included) has voted. Statistics, over revealed rounds: per shown member and per model, the fooled rate
(votes that judged a clone reply real) against the real-judged-real rate (votes that judged a real message real,
the baseline a perfect clone would match); attribution accuracy; players' scores (a point for each right
Real/Clone call, another for the right author).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.render import SAFE_MENTIONS
from bot.replies import context_turn
from cloneus.data.normalize import Turn
from cloneus.errors import CloneusError
from cloneus.evaluation.suite import HUMAN_FILE
from cloneus.io import atomic_write_json

if TYPE_CHECKING:
    from bot.client import CloneusBot
    from bot.store import GameRound, GameVote, Store

logger = logging.getLogger(__name__)

ROUND_SECONDS = 60.0
ATTRIBUTION_EVERY = 3  # every third round hides the name: players also pick who wrote it
SELECT_LIMIT = 25  # Discord's most options in one select menu
CANDIDATE_ROWS = 1000  # context rows read per channel (the store keeps this many)
MAX_ROUNDS = 10
CLONE_MAX_NEW_TOKENS = 96  # a chat message, not an essay: longer would give the clone away


@dataclass(frozen=True)
class Candidate:
    """A real message that may be played, with the history before it (for the clone's version)."""

    message_id: int
    author: str  # the model's display name for the member
    author_id: int
    text: str
    history: list[Turn]


@dataclass
class Rates:
    """Votes on one member's (or one model's) rounds."""

    clone_votes: int = 0
    fooled: int = 0
    real_votes: int = 0
    real_judged_real: int = 0

    @property
    def fooled_rate(self) -> float | None:
        return self.fooled / self.clone_votes if self.clone_votes else None

    @property
    def real_rate(self) -> float | None:
        return self.real_judged_real / self.real_votes if self.real_votes else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "clone_votes": self.clone_votes,
            "fooled_rate": self.fooled_rate,
            "real_votes": self.real_votes,
            "real_judged_real_rate": self.real_rate,
        }


@dataclass
class GameStats:
    by_member: dict[str, Rates] = field(default_factory=lambda: defaultdict(Rates))
    by_model: dict[str, Rates] = field(default_factory=lambda: defaultdict(Rates))
    attribution_votes: int = 0
    attribution_correct: int = 0
    scores: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def attribution_accuracy(self) -> float | None:
        return self.attribution_correct / self.attribution_votes if self.attribution_votes else None


def vote_points(rnd: GameRound, vote: GameVote) -> int:
    """A point for the right Real/Clone call, another for the right author in an attribution round."""
    points = int(vote.guess_real is not None and vote.guess_real == rnd.is_real)
    return points + int(rnd.attribution and vote.guess_author == rnd.author)


def compute_stats(rounds: list[tuple[GameRound, list[GameVote]]]) -> GameStats:
    """Fooled and real-judged-real rates per member and model, attribution accuracy and scores."""
    stats = GameStats()
    for rnd, votes in rounds:
        targets = [stats.by_member[rnd.author]] + ([stats.by_model[rnd.model]] if rnd.model else [])
        for vote in votes:
            stats.scores[vote.user_id] += vote_points(rnd, vote)
            if rnd.attribution and vote.guess_author is not None:
                stats.attribution_votes += 1
                stats.attribution_correct += vote.guess_author == rnd.author
            if vote.guess_real is None:
                continue
            for rates in targets:
                if rnd.is_real:
                    rates.real_votes += 1
                    rates.real_judged_real += vote.guess_real
                else:
                    rates.clone_votes += 1
                    rates.fooled += vote.guess_real
    return stats


async def model_fidelity(store: Store, model: str) -> Rates:
    """A model's rates over every guild's games: human fidelity, for `/model status` and `game_fidelity.json`."""
    return compute_stats(await store.model_game_votes(model)).by_model.get(model, Rates())


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


class RoundView(discord.ui.View):
    """Real / Clone buttons, plus a "who wrote it?" select in attribution rounds."""

    def __init__(self, game: GameService, rnd: GameRound, authors: list[str]):
        super().__init__(timeout=None)
        self.game, self.round_id = game, rnd.id
        choices = (("Real", True, discord.ButtonStyle.success), ("Clone", False, discord.ButtonStyle.danger))
        for label, real, style in choices:
            button = discord.ui.Button(label=label, style=style, custom_id=f"game:{rnd.id}:{label.lower()}")
            button.callback = self._guess(real)
            self.add_item(button)
        if rnd.attribution:
            options = [discord.SelectOption(label=name[:100], value=name[:100]) for name in authors]
            select = discord.ui.Select(
                placeholder="Who wrote it?", options=options, custom_id=f"game:{rnd.id}:who", row=1
            )
            select.callback = self._author(select)
            self.add_item(select)

    def _guess(self, real: bool):
        async def callback(interaction: discord.Interaction) -> None:
            await self.game.vote(interaction, self.round_id, guess_real=real)

        return callback

    def _author(self, select: discord.ui.Select):
        async def callback(interaction: discord.Interaction) -> None:
            await self.game.vote(interaction, self.round_id, guess_author=select.values[0])

        return callback


class GameService:
    """Runs games for the cog: picks messages, writes clone versions, collects votes, reveals, keeps stats.

    Args:
        bot (`CloneusBot`): store, engine, settings.
        seed (`int`, *optional*): seeds the choice of messages and of real vs clone (tests).
    """

    def __init__(self, bot: CloneusBot, seed: int | None = None):
        self.bot = bot
        self.round_seconds = ROUND_SECONDS
        self.rng = random.Random(seed)
        self._open: dict[int, OpenRound] = {}  # rounds taking votes, by round id
        self._tasks: set[asyncio.Task] = set()

    async def candidates(self, guild: discord.Guild, channel_id: int, author: str | None) -> list[Candidate]:
        """Real messages of this channel that may be played (see the module docstring for the rules)."""
        model = self.bot.engine.model
        if model is None or not model.loaded:
            raise CloneusError("no model is loaded; /model switch loads one")
        trainable = {u.id: u for u in model.users.trainable()}
        rows = await self.bot.store.recent_context(channel_id, CANDIDATE_ROWS)
        turns = [context_turn(m, guild) for m in rows]
        # Each real message as the model knows it (mentions and emoji resolved); None where training drops it.
        texts = await asyncio.to_thread(model.normalizer.texts, turns)
        opted_out = await self.bot.store.opted_out_ids()
        used = await self.bot.store.used_game_sources(guild.id)
        ctx_limit = self.bot.settings.ctx_limit
        found = []
        for i, row in enumerate(rows):
            user = model.users.get(row.author)
            if row.is_clone or row.message_id is None or row.author_id is None or i == 0 or texts[i] is None:
                continue
            member = guild.get_member(row.author_id)
            if row.author_id in opted_out or row.message_id in used or (member is not None and member.bot):
                continue
            if (
                user is None
                or user.id not in trainable
                or (author and user.display_name.casefold() != author.casefold())
            ):
                continue
            history = turns[max(0, i - ctx_limit) : i]  # normalised by the model, as training data was
            found.append(Candidate(row.message_id, user.display_name, row.author_id, texts[i], history))
        return found

    async def start(
        self, channel: discord.TextChannel, host_id: int, rounds: int, author: str | None
    ) -> tuple[int, int]:
        """Check there is enough to play, create the game and run it in the background; (game id, rounds)."""
        pool = await self.candidates(channel.guild, channel.id, author)
        if not pool:
            who = f" by {author}" if author else ""
            raise CloneusError(
                f"no unused real messages{who} in this channel to play with: the game needs messages of members "
                "the served model can clone (not opted out, not bots, not used in an earlier game)"
            )
        rounds = min(rounds, len(pool))
        game_id = await self.bot.store.create_game(channel.guild.id, channel.id, host_id, rounds)
        task = asyncio.create_task(self._play(channel, game_id, host_id, rounds, pool), name=f"game-{game_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return game_id, rounds

    async def _play(self, channel, game_id: int, host_id: int, rounds: int, pool: list[Candidate]) -> None:
        try:
            for number in range(1, rounds + 1):
                await self._play_round(channel, game_id, host_id, number, rounds, pool)
            await self.bot.store.finish_game(game_id)
            await self._write_fidelity()
            await channel.send(await self._scoreboard(game_id), allowed_mentions=SAFE_MENTIONS)
        except CloneusError as e:  # the model went away or got busy: the game stops with a reason
            await channel.send(f"🎭 Game over early: {e}")
        except Exception:
            logger.exception("game %d failed", game_id)
            await channel.send("🎭 The game stopped because of an error on my side; it was logged.")

    async def _play_round(self, channel, game_id, host_id, number, rounds, pool: list[Candidate]) -> None:
        cand = pool.pop(self.rng.randrange(len(pool)))
        is_real = self.rng.random() < 0.5
        text = cand.text
        if not is_real:
            sampling = {"max_new_tokens": CLONE_MAX_NEW_TOKENS}
            text = await self.bot.engine.generate(cand.history, cand.author, sampling=sampling)
        rnd = await self.bot.store.add_round(
            game_id, channel.guild.id, number, cand.message_id, cand.author, cand.author_id, text.strip(),
            is_real=is_real, model=self.bot.engine.status().model, attribution=number % ATTRIBUTION_EVERY == 0,
        )  # fmt: skip
        opened = self._open[rnd.id] = OpenRound(game_id, host_id)
        view = RoundView(self, rnd, self._author_choices(cand.author))
        message = await channel.send(embed=round_embed(rnd, rounds), view=view, allowed_mentions=SAFE_MENTIONS)
        await self.bot.store.set_round_message(rnd.id, message.id)
        try:
            await asyncio.wait_for(opened.everyone_voted.wait(), timeout=self.round_seconds)
        except TimeoutError:
            logger.info("round %d timed out", rnd.id)
        finally:
            self._open.pop(rnd.id, None)
        view.stop()
        await self._reveal(message, rnd)

    def _author_choices(self, author: str) -> list[str]:
        """The select's options: the true author among (up to 24 of) the other cloneable members, shuffled."""
        names = [u.display_name for u in self.bot.engine.model.users.trainable() if u.display_name != author]
        picked = self.rng.sample(names, min(len(names), SELECT_LIMIT - 1)) + [author]
        self.rng.shuffle(picked)
        return picked

    async def vote(
        self, interaction: discord.Interaction, round_id: int, *, guess_real=None, guess_author=None
    ) -> None:
        """A button or select press: record it, acknowledge privately, close the round if everyone voted."""
        opened = self._open.get(round_id)
        if opened is None:
            await interaction.response.send_message("This round is over.", ephemeral=True)
            return
        await self.bot.store.vote(round_id, interaction.user.id, guess_real=guess_real, guess_author=guess_author)
        what = f"who: {guess_author}" if guess_author else ("Real" if guess_real else "Clone")
        await interaction.response.send_message(f"Vote recorded ({what}).", ephemeral=True)
        rnd = await self.bot.store.get_round(round_id)
        votes = {v.user_id: v for v in await self.bot.store.round_votes(round_id)}
        players = await self.bot.store.game_players(opened.game_id) | {opened.host_id}
        complete = [v for v in votes.values() if v.guess_real is not None and (not rnd.attribution or v.guess_author)]
        if players <= {v.user_id for v in complete}:
            opened.everyone_voted.set()

    async def _reveal(self, message: discord.Message, rnd: GameRound) -> None:
        if not await self.bot.store.reveal_round(rnd.id):
            return
        votes = await self.bot.store.round_votes(rnd.id)
        embed = round_embed(rnd, None)
        verdict = (
            f"**Real**: {rnd.author} wrote this." if rnd.is_real else f"**Clone**: `{rnd.model}` as {rnd.author}."
        )
        right = [f"<@{v.user_id}>" for v in votes if v.guess_real == rnd.is_real]
        embed.add_field(name="Answer", value=verdict, inline=False)
        embed.add_field(name="Right", value=", ".join(right) or "nobody", inline=False)
        await message.edit(embed=embed, view=None, allowed_mentions=SAFE_MENTIONS)

    async def _scoreboard(self, game_id: int) -> str:
        scores = compute_stats(await self.bot.store.game_rounds_with_votes(game_id)).scores
        if not scores:
            return "🎭 Game over: nobody voted."
        lines = [f"<@{uid}>: {pts}" for uid, pts in sorted(scores.items(), key=lambda kv: -kv[1])]
        return "🎭 Game over! Scores:\n" + "\n".join(lines)

    async def _write_fidelity(self) -> None:
        """`game_fidelity.json` in the served checkpoint: its fooled and real-judged-real rates so far, for the
        eval report (the game is the human side of clone fidelity)."""
        status = self.bot.engine.status()
        if not status.model or not status.checkpoint:
            return
        rates = await model_fidelity(self.bot.store, status.model)
        record = {"model": status.model, **rates.as_dict()}
        await asyncio.to_thread(atomic_write_json, Path(status.checkpoint) / HUMAN_FILE, record)

    async def stats_text(self, guild_id: int) -> str:
        """`/clone game stats`: per member and model, fooled rate against real-judged-real; attribution; scores."""
        stats = compute_stats(await self.bot.store.revealed_rounds(guild_id))
        if not stats.by_member:
            return "No games played here yet; start one with /clone game play."
        lines = ["**Fooled** = clone judged real · **real** = real judged real (what a perfect clone would score)"]
        for title, table in (("member", stats.by_member), ("model", stats.by_model)):
            lines.append(f"__per {title}__")
            for name, r in sorted(table.items()):
                lines.append(
                    f"{name}: fooled {percent(r.fooled_rate)} of {r.clone_votes} · real {percent(r.real_rate)} "
                    f"of {r.real_votes}"
                )
        lines.append(f"__attribution__: {percent(stats.attribution_accuracy)} of {stats.attribution_votes} right")
        top = sorted(stats.scores.items(), key=lambda kv: -kv[1])[:10]
        lines.append("__scores__: " + (", ".join(f"<@{uid}> {pts}" for uid, pts in top) or "none"))
        return "\n".join(lines)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class OpenRound:
    """A round still taking votes."""

    game_id: int
    host_id: int
    everyone_voted: asyncio.Event = field(default_factory=asyncio.Event)


def round_embed(rnd: GameRound, rounds: int | None) -> discord.Embed:
    """The round as players see it: the text, and the name unless it is an attribution round."""
    title = f"Real or clone? Round {rnd.number}" + (f"/{rounds}" if rounds else "")
    quote = "\n".join(f"> {line}" for line in (rnd.text or "…").splitlines())
    who = "Who wrote this, and is it real?" if rnd.attribution else f"**{rnd.author}** wrote:"
    return discord.Embed(title=title, description=f"{who}\n{quote}"[:4096])
