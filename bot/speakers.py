"""Who a clone speaks as: name lists typed on a command, consent checks, the next speaker among candidates, and
zero-shot names (members the model never saw).

Consent is checked twice: the model's user index refuses excluded and opted-out users (`UnknownAuthorError`), and
the store's opt-out list (set by `/clone optout`, newer than any trained checkpoint) refuses the rest, matched by
index id and by the Discord member of that name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.replies import History, find_member
from cloneus.errors import CloneusError, UnknownAuthorError

if TYPE_CHECKING:
    from bot.client import CloneusBot
    from cloneus import Cloneus

MAX_AUTHORS = 5  # one batch or scene at a time; more replies at once would flood the channel


def parse_names(raw: str, option: str = "authors") -> list[str]:
    """`"alice, bob , carol"` → `["alice", "bob", "carol"]` (repeats dropped).

    Raises:
        `CloneusError`: no name, or more than `MAX_AUTHORS`.
    """
    names = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not names:
        raise CloneusError(f"{option}={raw!r}: name at least one member, separated by commas")
    if len(names) > MAX_AUTHORS:
        raise CloneusError(f"{option}: at most {MAX_AUTHORS} names at once, got {len(names)}")
    return names


class Speakers:
    """Author resolution shared by `/clone` commands and auto-reply.

    Args:
        bot (`CloneusBot`): gives the engine (the loaded model's index) and the store (opt-outs).
    """

    def __init__(self, bot: CloneusBot):
        self.bot = bot

    def require_model(self) -> Cloneus:
        """The loaded model, or `EngineLoading` (with the ETA) / `EngineNotLoaded`."""
        return self.bot.engine.ready_model()

    async def _opted_out(self, guild: discord.Guild | None, names: tuple[str, ...], index_id: str | None) -> bool:
        opted_out = await self.bot.store.opted_out_ids()
        if index_id is not None and index_id in {str(i) for i in opted_out}:
            return True
        members = (find_member(guild, n) for n in names)
        return any(m is not None and m.id in opted_out for m in members)

    async def resolve(self, guild: discord.Guild | None, name: str) -> str:
        """The model's spelling of `name`, refusing unknown, excluded and opted-out members.

        Raises:
            `UnknownAuthorError`: not someone the loaded model can speak as, or opted out.
            `EngineLoading` / `EngineNotLoaded`: no model to ask yet.
        """
        user = self.require_model().users.resolve(name)
        if await self._opted_out(guild, (user.display_name, user.username), str(user.id)):
            raise UnknownAuthorError(f"{user.display_name} opted out of being cloned")
        return user.display_name

    async def resolve_all(self, guild: discord.Guild | None, names: list[str]) -> list[str]:
        """`resolve` for each name, in order, without repeats."""
        resolved = [await self.resolve(guild, n) for n in names]
        return list(dict.fromkeys(resolved))

    async def new_name(self, guild: discord.Guild | None, name: str) -> tuple[str, bool]:
        """`(name, zero_shot)` for `/clone speak new:true`: a member the index knows is spoken as normally
        (zero_shot False); any other name is zero-shot, unless it is the name of a member who opted out.

        Raises:
            `UnknownAuthorError`: an opted-out, excluded or bot member's name.
        """
        model = self.require_model()
        if model.users.get(name) is not None:
            return await self.resolve(guild, name), False
        if await self._opted_out(guild, (name,), None):
            raise UnknownAuthorError(f"{name} opted out of being cloned")
        return name.strip(), True

    async def next_author(
        self,
        guild: discord.Guild | None,
        history: History,
        mode: str | tuple[str, float],
        candidates: list[str] | None = None,
        seed: int | None = None,
    ) -> str | None:
        """The model's pick among `candidates` (default: everyone it can speak as); an opted-out pick is replaced
        by the likeliest candidate who may be cloned. None when the model stays silent (lurk)."""
        exclude = None
        if candidates is not None:
            wanted = {c.casefold() for c in candidates}
            exclude = [n for n in self.bot.engine.authors if n.casefold() not in wanted]
        author = await self.bot.engine.predict_author(history, mode, exclude=exclude, seed=seed)
        if author is None:
            return None
        try:
            return await self.resolve(guild, author)
        except UnknownAuthorError:
            probabilities = await self.bot.engine.author_probabilities(history)
        allowed = {c.casefold() for c in candidates} if candidates is not None else None
        for name in sorted(probabilities, key=probabilities.get, reverse=True):
            if allowed is not None and name.casefold() not in allowed:
                continue
            try:
                return await self.resolve(guild, name)
            except UnknownAuthorError:
                continue
        return None
