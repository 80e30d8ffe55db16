"""`/model`: list the registered checkpoints, hot-swap between them, show the engine's status, unload.

Only names registered in `models.json` can be loaded, never a path typed in Discord, so a member cannot make
the bot open arbitrary files. Switching goes through the engine's worker (`Cloneus.swap_checkpoint` when a model
of the same base is loaded), so replies in flight finish first and the event loop never waits on the load.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.checkpoints import checkpoint_under, find_checkpoints, read_eval, runs_root
from bot.game import model_fidelity, percent
from bot.pager import Pager, code_pages
from cloneus.errors import CloneusError
from cloneus.evaluation.report import summary_line
from cloneus.inference.checkpoint import read_checkpoint
from cogs.admin import admin_only

if TYPE_CHECKING:
    from bot.client import CloneusBot
    from bot.registry import ModelEntry

logger = logging.getLogger(__name__)

AUTOCOMPLETE_LIMIT = 25
EMBED_FIELDS_LIMIT = 25  # Discord's limit on fields per embed
MODEL_NAME_MAX = 64


def perplexity(entry: ModelEntry) -> str:
    """The entry's eval perplexity (or exp of its eval loss) as text, or '?' when training recorded none."""
    metrics = entry.metrics or {}
    if isinstance(metrics.get("eval_perplexity"), int | float):
        return f"{metrics['eval_perplexity']:.2f}"
    if isinstance(metrics.get("eval_loss"), int | float):
        return f"{math.exp(metrics['eval_loss']):.2f}"
    return "?"


def eval_figures(entry: ModelEntry | None) -> str:
    """The entry's latest `/admin eval` figures, or how to get them."""
    return summary_line(entry.eval) if entry is not None and entry.eval else "not evaluated yet (/admin eval)"


class ModelCog(commands.GroupCog, group_name="model", group_description="Which clone model is served"):
    """Registered models and the engine that serves one."""

    def __init__(self, bot: CloneusBot):
        self.bot = bot

    async def _name_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        names = [n for n in self.bot.registry.names() if current.casefold() in n.casefold()]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_LIMIT]]

    @app_commands.command(name="list")
    @app_commands.describe(all="Admins: browse every checkpoint under the runs directory, with eval figures")
    async def list_(self, interaction: discord.Interaction, all: bool = False) -> None:
        """The registered models; the one being served is marked."""
        if all:
            await admin_only(interaction)
            await self._browse(interaction)
            return
        entries = self.bot.registry.entries
        if not entries:
            await interaction.response.send_message("No models registered yet; train one with /admin train.")
            return
        current = self.bot.engine.status().model
        default = self.bot.registry.default
        embed = discord.Embed(title="Models", description="▶ = loaded now · ★ = default at start-up")
        for entry in entries[:EMBED_FIELDS_LIMIT]:
            marks = ("▶ " if entry.name == current else "") + ("★ " if default and entry.name == default.name else "")
            value = f"{entry.desc or 'no description'}\n`{entry.ckpt}`\neval perplexity: {perplexity(entry)}"
            value += f"\n{eval_figures(entry)}"
            embed.add_field(name=f"{marks}{entry.name}", value=value[:1024], inline=False)
        await interaction.response.send_message(embed=embed)

    async def _browse(self, interaction: discord.Interaction) -> None:
        """Every checkpoint under the runs directory, paged, with its registered name and eval figures."""
        root = runs_root(self.bot.settings.config_path)
        found = await asyncio.to_thread(find_checkpoints, root)
        if not found:
            raise CloneusError(f"no checkpoints under {root}; train one with /admin train")
        names = {e.path.resolve(): e.name for e in self.bot.registry.entries}
        lines = []
        for ckpt in found:
            name = names.get(ckpt.path.resolve())
            head = f"{ckpt.path}" + (f" (registered as {name})" if name else "")
            lines.append(f"{head}\n  {summary_line(ckpt.eval) if ckpt.eval else 'no eval (/admin eval)'}")
        text = f"{len(found)} checkpoints under {root}:\n" + "\n".join(lines)
        pager = Pager(code_pages(text), interaction.user.id)
        await interaction.response.send_message(pager.content(), view=pager, ephemeral=True)

    @app_commands.command(name="register")
    @app_commands.check(admin_only)
    @app_commands.describe(
        name="The name to switch to it by",
        ckpt="A checkpoint-<step> directory under the runs directory",
        desc="Shown in /model list",
    )
    async def register(self, interaction: discord.Interaction, name: str, ckpt: str, desc: str = "") -> None:
        """Add a checkpoint from the runs directory to models.json (admins only)."""
        name = name.strip()
        if not 1 <= len(name) <= MODEL_NAME_MAX or "`" in name:
            raise CloneusError(f"name={name!r}: 1-{MODEL_NAME_MAX} characters, no backticks")
        if self.bot.registry.get(name) is not None:
            raise CloneusError(f"a model is already registered as {name!r}; pick another name")
        path = checkpoint_under(runs_root(self.bot.settings.config_path), ckpt)
        await asyncio.to_thread(read_checkpoint, path)  # refuses a directory that would not load, naming why
        entry = await asyncio.to_thread(self.bot.registry.register, name, desc, path)
        summary = read_eval(path)
        if summary is not None:
            entry = await asyncio.to_thread(self.bot.registry.record_eval, name, summary)
        await interaction.response.send_message(
            f"Registered `{entry.name}` → `{entry.ckpt}`; load it with /model switch name:{entry.name}."
        )

    @app_commands.command(name="switch")
    @app_commands.describe(name="A registered model (see /model list)")
    @app_commands.autocomplete(name=_name_autocomplete)
    async def switch(self, interaction: discord.Interaction, name: str) -> None:
        """Hot-swap to another registered model and report how long it took."""
        entry = self.bot.registry.get(name)
        if entry is None:
            known = ", ".join(self.bot.registry.names()) or "none registered"
            raise CloneusError(f"unknown model {name!r}; registered models: {known}")
        await interaction.response.defer(thinking=True)
        seconds = await self.bot.engine.load(entry)
        await interaction.edit_original_response(content=f"Switched to `{entry.name}` in {seconds:.1f} s.")

    @app_commands.command(name="status")
    async def status(self, interaction: discord.Interaction) -> None:
        """The loaded model, its device and memory, and how many requests are queued."""
        status = self.bot.engine.status()
        state = "loading" if status.loading else "loaded" if status.loaded else "not loaded"
        embed = discord.Embed(title=f"Model: {status.model or '—'} ({state})")
        embed.add_field(name="device", value=status.device or "—")
        embed.add_field(name="memory", value=f"{status.memory_mb:.0f} MB")
        embed.add_field(name="queue", value=f"{status.queue_depth} / {self.bot.settings.queue_depth}")
        embed.add_field(name="checkpoint", value=f"`{status.checkpoint or '—'}`"[:1024], inline=False)
        if status.model is not None:
            embed.add_field(name="eval", value=eval_figures(self.bot.registry.get(status.model))[:1024], inline=False)
            rates = await model_fidelity(self.bot.store, status.model)
            embed.add_field(
                name="Real or clone? (human fidelity)",
                value=f"fooled {percent(rates.fooled_rate)} of {rates.clone_votes} votes · real judged real "
                f"{percent(rates.real_rate)} of {rates.real_votes}",
                inline=False,
            )
        if status.loading:
            embed.add_field(name="ready in", value=f"~{self.bot.engine.loading_eta() or 0:.0f} s")
        if status.error:
            embed.add_field(name="last load error", value=status.error[:1024], inline=False)
        await interaction.response.send_message(embed=embed)

    @app_commands.command(name="unload")
    @app_commands.check(admin_only)
    async def unload(self, interaction: discord.Interaction) -> None:
        """Free the model's memory; clones are silent until /model switch (admins only)."""
        if not self.bot.engine.status().loaded:
            raise CloneusError("no model is loaded")
        await interaction.response.defer(thinking=True)
        await self.bot.engine.unload()
        await interaction.edit_original_response(content="Model unloaded; /model switch loads one again.")


async def setup(bot: CloneusBot) -> None:
    await bot.add_cog(ModelCog(bot))
