"""The bot's durable state in one SQLite file (aiosqlite), behind one `Store` facade.

Each table group lives in its own module and `Store` combines them:
- `context.py`: per-channel context (recent messages, clone replies stored under the cloned author), the base
  model's chat, and the undo of a clear;
- `settings.py`: per-channel settings (sampling defaults, auto-reply, webhook);
- `sampling.py`: sampling profiles per guild, word rules per channel;
- `consent.py`: opt-outs, auto-reply opt-ins, and the erasure of a member's data;
- `models.py`: the measured load time of each checkpoint;
- `feedback.py`: clone replies and their feedback;
- `game.py`: the "Real or clone?" games, rounds and votes;
- `jobs.py`: training jobs and cron schedules;
- `base.py`: the shared connection, transactions and migration runner; `migrations.py`: the schema.

The YouTube cache lives in the same file in `youtube_*` tables that `cloneus.plugins.youtube` owns; nothing here
touches them.
"""

from __future__ import annotations

from bot.store.consent import ConsentTables
from bot.store.context import BaseMessage, ContextMessage, ContextTables
from bot.store.feedback import CloneReply, FeedbackTables
from bot.store.game import GameRound, GameTables, GameVote
from bot.store.jobs import Job, JobTables, Schedule
from bot.store.migrations import MIGRATIONS
from bot.store.models import ModelTables
from bot.store.sampling import SamplingTables, WordRule
from bot.store.settings import SettingsTables

__all__ = [
    "MIGRATIONS",
    "BaseMessage",
    "CloneReply",
    "ContextMessage",
    "GameRound",
    "GameVote",
    "Job",
    "Schedule",
    "Store",
    "WordRule",
]

CONTEXT_KEEP_PER_CHANNEL = 1000  # rows kept per channel; ctx_limit reads far fewer, the rest is for regenerate


class Store(
    ContextTables, SettingsTables, SamplingTables, ConsentTables, FeedbackTables, GameTables, JobTables, ModelTables
):
    """Async access to the bot database. Open with `await Store.open(path)` or `async with await Store.open(...)`.

    One connection is shared by the whole bot; an `asyncio.Lock` keeps one transaction at a time on it.
    """

    @property
    def context_keep(self) -> int:
        """Rows of context kept per channel (`CONTEXT_KEEP_PER_CHANNEL`, read when each message is added)."""
        return CONTEXT_KEEP_PER_CHANNEL
