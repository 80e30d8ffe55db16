"""`/admin`: export the channel, build the user index, train, evaluate, watch and cancel jobs, schedule retraining.

Every command here needs Manage Server, or the `ADMIN_ROLE` role, or a user id in `ADMIN_IDS`. Discord hides the
group from other members (`default_permissions`), and `interaction_check` enforces the rule again in code,
since a server admin can override the Discord-side hint.

Training progress is shown in an ordinary channel message that the job watcher edits (not the interaction
response, whose token expires after 15 minutes), so it keeps updating through a long run and across a bot
restart: the message's ids are stored with the job and `resume` re-attaches the same reporter.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.export import build_index, export_channel, export_path, list_exports
from bot.jobs import RUNNING
from bot.progress import ProgressState, format_duration
from bot.render import SAFE_MENTIONS, split_message
from cloneus.errors import CloneusError
from cloneus.evaluation.report import summary_line

if TYPE_CHECKING:
    from bot.client import CloneusBot
    from bot.settings import Settings
    from bot.store import Job

logger = logging.getLogger(__name__)

JOBS_SHOWN = 10
FINAL_STATUSES = ("done", "failed", "cancelled", "interrupted")
STATUS_ICONS = {"done": "✅", "failed": "❌", "cancelled": "⏹️", "interrupted": "⏹️", "cancelling": "⏳"}


def is_admin(user: discord.abc.User, permissions: discord.Permissions, settings: Settings) -> bool:
    """Manage Server (or Administrator) in the channel, the `ADMIN_ROLE` role (name or id), or `ADMIN_IDS`."""
    if user.id in settings.admin_ids or permissions.manage_guild or permissions.administrator:
        return True
    role = settings.admin_role
    roles = user.roles if isinstance(user, discord.Member) else []
    return role is not None and any(r.name == role or str(r.id) == role for r in roles)


async def admin_only(interaction: discord.Interaction) -> bool:
    """Check predicate for admin commands outside /admin: the same rule as `is_admin`."""
    if is_admin(interaction.user, interaction.permissions, interaction.client.settings):
        return True
    raise app_commands.CheckFailure("this needs Manage Server, the admin role, or an id in ADMIN_IDS.")


def parse_date(raw: str) -> datetime:
    """`2024-05-31` or an ISO time (UTC unless it says otherwise).

    Raises:
        `CloneusError`: not a date.
    """
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CloneusError(f"after={raw!r}: expected a date like 2024-05-31 or 2024-05-31T18:00") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def pick_chatlog(settings: Settings, guild_id: int) -> Path:
    """The export to train on: the configured channel's, else the guild's most recent one.

    Raises:
        `CloneusError`: no export exists yet.
    """
    if settings.channel_id is not None:
        preferred = export_path(settings.chat_dir, guild_id, settings.channel_id)
        if preferred.is_file():
            return preferred
    exports = list_exports(settings.chat_dir, guild_id)
    if not exports:
        raise CloneusError(f"no channel export in {settings.chat_dir}; run /admin export first")
    return exports[-1]


def describe_job(job: Job, state: ProgressState | None = None) -> str:
    """`⏳ Job 3 · mymodel · running` and the progress line."""
    if state is None:
        state = ProgressState(**job.progress) if job.progress else ProgressState()
    icon = STATUS_ICONS.get(job.status, "⏳")
    kind = "Eval" if _is_eval(job) else "Training"
    head = f"{icon} {kind} job {job.id} · `{job.name}` · {job.status}"
    if job.error:
        head += f"\n{job.error[:1500]}"
    return f"{head}\n`{state.render()}`"


def _is_eval(job: Job) -> bool:
    return (job.config or {}).get("kind") == "eval"


def describe_eval(job: Job, state: ProgressState) -> str:
    """The end-of-eval summary (`summary_line`), or why it failed."""
    if job.status == "done":
        figures = summary_line(state.metrics or {})
        return f"📊 `{job.name}` evaluated: {figures}\nFull report: `eval.html` in `{job.config['ckpt']}`."
    return f"{STATUS_ICONS.get(job.status, '⏹️')} Eval of `{job.name}` {job.status}: {job.error or 'no result'}."


def describe_metrics(job: Job, state: ProgressState) -> str:
    """The end-of-run summary: eval loss and perplexity, train loss, speed, wall time, registration."""
    m = state.metrics or {}
    parts = []
    for key, label in (
        ("eval_loss", "eval loss"),
        ("eval_perplexity", "eval perplexity"),
        ("train_loss", "train loss"),
    ):
        if isinstance(m.get(key), int | float):
            parts.append(f"{label} {m[key]:.3f}")
    if isinstance(m.get("tokens_per_s"), int | float):
        parts.append(f"{m['tokens_per_s']:.0f} tok/s")
    if isinstance(m.get("wall_s"), int | float):
        parts.append(f"wall {format_duration(m['wall_s'])}")
    summary = " · ".join(parts) or "no metrics recorded"
    if job.status == "done":
        return (
            f"✅ `{job.name}` finished: {summary}\nRegistered checkpoint `{state.final_checkpoint}` as "
            f"`{job.name}`; use `/model switch name:{job.name}`."
        )
    detail = f" Last checkpoint: `{state.final_checkpoint}`." if state.final_checkpoint else ""
    return f"{STATUS_ICONS.get(job.status, '⏹️')} `{job.name}` {job.status}: {job.error or summary}.{detail}"


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(commands.GroupCog, group_name="admin", group_description="Export, index, train (server admins)"):
    """Admin-only data and training commands."""

    schedule = app_commands.Group(name="schedule", description="Periodic export + retraining")

    def __init__(self, bot: CloneusBot):
        self.bot = bot

    async def cog_load(self) -> None:
        await self.bot.jobs.resume(self.report_progress)
        for item in await self.bot.store.list_schedules():
            self.bot.jobs.schedule(
                f"retrain-{item.guild_id}", item.cron, partial(self.scheduled_retrain, item.guild_id)
            )

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await admin_only(interaction)

    async def report_progress(self, job: Job, state: ProgressState) -> None:
        """Edit the job's progress message; when it ends, post `loss.png` and the eval summary."""
        if job.channel_id is None:
            return
        channel = self.bot.get_partial_messageable(job.channel_id)
        if job.message_id is not None:
            await channel.get_partial_message(job.message_id).edit(content=describe_job(job, state))
        if job.status in FINAL_STATUSES:
            if _is_eval(job):
                chart = Path(job.config["ckpt"]) / "eval.png" if job.status == "done" else None
                text = describe_eval(job, state)
            else:
                chart = Path(state.run_dir) / "loss.png" if state.run_dir else None
                text = describe_metrics(job, state)
            file = discord.File(chart) if chart is not None and chart.is_file() else None
            await channel.send(content=text, file=file, allowed_mentions=SAFE_MENTIONS)

    @app_commands.command(name="export")
    @app_commands.describe(channel="Channel to export (default: this one)", after="Only messages after this date")
    async def export(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None, after: str | None = None
    ) -> None:
        """Export a channel's history to data/chat/ (DiscordChatExporter JSON; re-runs append new messages)."""
        since = parse_date(after) if after else None
        target = channel or interaction.channel
        await interaction.response.defer(thinking=True)

        async def progress(count: int) -> None:
            await interaction.edit_original_response(content=f"📥 Exporting {target.mention}… {count} messages")

        try:
            result = await export_channel(target, self.bot.settings.chat_dir, after=since, on_progress=progress)
        except discord.Forbidden:
            raise CloneusError(f"I can't read the history of {target.mention} (needs Read Message History)") from None
        await interaction.edit_original_response(
            content=f"📥 Exported {target.mention}: {result.added} new messages, {result.total} in `{result.path}`."
        )

    @app_commands.command(name="index")
    @app_commands.describe(min_share="Share of messages (or a count, when > 1) needed to be trained as a speaker")
    async def index(
        self, interaction: discord.Interaction, min_share: app_commands.Range[float, 0.0] | None = None
    ) -> None:
        """Build or update config/users.json from the channel exports and show who is included."""
        await interaction.response.defer(thinking=True)
        settings = self.bot.settings
        exports = list_exports(settings.chat_dir, interaction.guild_id) or list_exports(settings.chat_dir)
        opted_out = await self.bot.store.opted_out_ids()
        index = await asyncio.to_thread(
            build_index,
            exports,
            settings.users_json,
            min_share=min_share,
            config_path=settings.config_path,
            opted_out_ids=opted_out,
        )
        rows = [f"{'user':<24} {'messages':>8} {'share':>6}  status"]
        for user in sorted(index.users, key=lambda u: -u.message_count):
            status = "included" if user.included else _exclusion(user)
            rows.append(f"{user.display_name[:24]:<24} {user.message_count:>8} {user.share:>6.1%}  {status}")
        header = f"Indexed {len(index.users)} users from {len(exports)} export(s) into `{settings.users_json}`:\n"
        pieces = split_message("\n".join(rows), limit=1900)
        await interaction.edit_original_response(content=header + f"```\n{pieces[0]}\n```")
        for piece in pieces[1:]:
            await interaction.followup.send(f"```\n{piece}\n```")

    @app_commands.command(name="train")
    @app_commands.describe(
        hours="Hours of silence that start a new session (dataset.hours_between_sessions)",
        chunk_size="Token limit of one conversation (training.chunk_size)",
        epochs="Training epochs (training.num_epochs)",
        max_steps="Stop after this many optimizer steps",
        model_id="Base model (hub id, local path or builtin:smollm2-135m)",
        name="Run name; the finished checkpoint is registered under it",
        feedback="Tune a registered model on the 👍/👎 reactions to its replies instead of training on the chat",
        model="With feedback: the registered model to tune (default: the one being served)",
    )
    async def train(
        self,
        interaction: discord.Interaction,
        hours: app_commands.Range[float, 0.0] | None = None,
        chunk_size: app_commands.Range[int, 16] | None = None,
        epochs: app_commands.Range[float, 0.0] | None = None,
        max_steps: app_commands.Range[int, 1] | None = None,
        model_id: str | None = None,
        name: str | None = None,
        feedback: bool = False,
        model: str | None = None,
    ) -> None:
        """Train a new checkpoint on the exported chat (or tune one on reactions), with a live progress message."""
        if feedback:
            params = self._feedback_params(model, hours=hours, chunk_size=chunk_size, epochs=epochs, model_id=model_id)
            what = f"the reactions to `{params['source_name']}`"
        elif model is not None:
            raise CloneusError("model: only goes with feedback:true (chat training starts from model_id)")
        else:
            params = {"hours": hours, "chunk_size": chunk_size, "epochs": epochs, "model_id": model_id}
        await interaction.response.defer(thinking=True)
        job = await self.start_job(interaction.channel, interaction.guild_id, params | {"max_steps": max_steps}, name)
        if not feedback:
            what = f"`{Path(job.config['chatlog']).name}`"
        await interaction.edit_original_response(content=f"🚀 Started training job {job.id} `{job.name}` on {what}.")

    def _feedback_params(self, model: str | None, **chat_only) -> dict:
        """The job parameters of `/admin train feedback:true`: which checkpoint is tuned."""
        given = [k for k, v in chat_only.items() if v is not None]
        if given:
            raise CloneusError(f"{', '.join(given)}: chat-training options; feedback:true takes max_steps and name")
        registry = self.bot.registry
        served = self.bot.engine.status().model
        entry = registry.get(model) if model else registry.get(served) if served else registry.default
        if entry is None:
            known = ", ".join(registry.names()) or "none registered"
            raise CloneusError(f"no model {model or 'served'} to tune; registered models: {known}")
        return {"feedback": True, "source": str(entry.path), "source_name": entry.name}

    async def start_job(self, channel: discord.abc.Messageable, guild_id: int, params: dict, name: str | None) -> Job:
        """Post the progress message, then launch the job (its failure is shown in that message too)."""
        name = name or f"run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        chatlog = None if params.get("feedback") else pick_chatlog(self.bot.settings, guild_id)
        message = await channel.send(f"⏳ Training `{name}`: starting…")
        params = params | {"name": name, "chatlog": chatlog, "guild_id": guild_id}
        params |= {"channel_id": message.channel.id, "message_id": message.id}
        try:
            return await self.bot.jobs.start_training(params, on_progress=self.report_progress)
        except CloneusError as e:
            await message.edit(content=f"❌ Training `{name}` not started: {e}")
            raise

    async def _model_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        names = [n for n in self.bot.registry.names() if current.casefold() in n.casefold()]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    @app_commands.command(name="eval")
    @app_commands.describe(
        model="A registered model (default: the one loaded now)",
        max_turns="Next-speaker turns scored",
        max_replies="Replies generated per model (finetuned and base)",
    )
    @app_commands.autocomplete(model=_model_autocomplete)
    async def eval_(
        self,
        interaction: discord.Interaction,
        model: str | None = None,
        max_turns: app_commands.Range[int, 1] | None = None,
        max_replies: app_commands.Range[int, 1] | None = None,
    ) -> None:
        """Measure how well each member's voice is learned (background job), then post the figures and chart."""
        default = self.bot.registry.default
        name = model or self.bot.engine.status().model or (default.name if default else None)
        if name is None:
            raise CloneusError("no model registered yet; train one with /admin train")
        await interaction.response.defer(thinking=True)
        message = await interaction.channel.send(f"⏳ Evaluating `{name}`: starting…")
        params = {"name": name, "max_turns": max_turns, "max_replies": max_replies, "guild_id": interaction.guild_id}
        params |= {"channel_id": message.channel.id, "message_id": message.id}
        try:
            job = await self.bot.jobs.start_eval(params, on_progress=self.report_progress)
        except CloneusError as e:
            await message.edit(content=f"❌ Eval of `{name}` not started: {e}")
            raise
        await interaction.edit_original_response(content=f"📊 Started eval job {job.id} on `{job.name}`.")

    async def _job_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        jobs = await self.bot.store.list_jobs(statuses=list(RUNNING))
        return [app_commands.Choice(name=f"{j.id} · {j.name}", value=j.id) for j in jobs if current in str(j.id)][:25]

    @app_commands.command(name="jobs")
    async def jobs(self, interaction: discord.Interaction) -> None:
        """List recent training jobs with their status and progress."""
        jobs = (await self.bot.store.list_jobs())[:JOBS_SHOWN]
        if not jobs:
            await interaction.response.send_message("No training jobs yet; start one with /admin train.")
            return
        text = "\n\n".join(describe_job(job) for job in jobs)
        await interaction.response.send_message(split_message(text)[0])

    @app_commands.command(name="cancel")
    @app_commands.describe(job="The job id (see /admin jobs)")
    @app_commands.autocomplete(job=_job_autocomplete)
    async def cancel(self, interaction: discord.Interaction, job: int) -> None:
        """Stop a training job; it saves a checkpoint first, which stays usable and resumable."""
        cancelled = await self.bot.jobs.cancel(job)
        await interaction.response.send_message(
            f"⏹️ Sent SIGTERM to job {cancelled.id} `{cancelled.name}`; it saves a checkpoint and stops."
        )

    @schedule.command(name="train")
    @app_commands.describe(cron="Crontab in UTC, e.g. '0 4 * * sun' (minute hour day month weekday), or 'off'")
    async def schedule_train(self, interaction: discord.Interaction, cron: str) -> None:
        """Export the channel and retrain on a schedule (persisted across restarts)."""
        key = f"retrain-{interaction.guild_id}"
        if cron.strip().lower() == "off":
            self.bot.jobs.unschedule(key)
            await self.bot.store.set_schedule(interaction.guild_id, None)
            await interaction.response.send_message("Scheduled retraining is off.")
            return
        self.bot.jobs.schedule(key, cron.strip(), partial(self.scheduled_retrain, interaction.guild_id))
        await self.bot.store.set_schedule(interaction.guild_id, cron.strip())
        await interaction.response.send_message(
            f"🗓️ Retraining scheduled `{cron.strip()}` (UTC); next run {self.bot.jobs.next_run(key)}."
        )

    async def scheduled_retrain(self, guild_id: int) -> None:
        """The cron action: export the configured channel incrementally, then train on it."""
        channel = self.bot.get_channel(self.bot.settings.channel_id) if self.bot.settings.channel_id else None
        if not isinstance(channel, discord.TextChannel) or channel.guild.id != guild_id:
            logger.warning("scheduled retrain for guild %d: CHANNEL_ID is not a text channel of it", guild_id)
            return
        try:
            await export_channel(channel, self.bot.settings.chat_dir)
            await self.start_job(channel, guild_id, {}, f"auto-{datetime.now(timezone.utc):%Y%m%d-%H%M}")
        except CloneusError as e:
            await channel.send(f"❌ Scheduled retraining failed: {e}", allowed_mentions=SAFE_MENTIONS)
        except Exception:
            # The scheduler is a boundary: nobody awaits this coroutine, so the traceback goes to the log.
            logger.exception("scheduled retrain for guild %d failed", guild_id)

    @app_commands.command(name="youtube")
    async def youtube(self, interaction: discord.Interaction) -> None:
        """YouTube link cache and quota statistics."""
        if self.bot.youtube is None:
            raise CloneusError("YouTube links are off: set YOUTUBE_API_KEY in .env and restart the bot")
        stats = await asyncio.to_thread(self.bot.youtube.stats)
        lines = "\n".join(f"{k}: {v}" for k, v in stats.items())
        await interaction.response.send_message(f"```\n{lines}\n```")


def _exclusion(user) -> str:
    if user.opted_out:
        return "opted out"
    if user.is_bot:
        return "bot"
    if user.excluded:
        return "excluded"
    return "below min share"


async def setup(bot: CloneusBot) -> None:
    await bot.add_cog(AdminCog(bot))
