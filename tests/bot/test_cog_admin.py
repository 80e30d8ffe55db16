"""/admin end to end: permissions, export, index, a real training job on the tiny model, jobs, cancel, schedules.

The training tests run the real `python -m cloneus train` subprocess on the tiny random model and a small chat
exported from the fake channel, for a couple of optimizer steps.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import discord
import pytest

from bot.export import export_path
from tests.bot.fake_discord import MEMBER_PERMS
from tests.bot.test_cog_clone import until
from tests.bot.test_export import seed_messages

ADMIN = discord.Permissions.all().value
IN_PROGRESS = "📥 Exporting"
POLL_S = 0.2


async def admin(drv, command: str, **options):
    """Run an /admin command as boss (an administrator) and wait for its final answer (not the progress line)."""
    rec = await drv.slash(command, user="boss", perms=ADMIN, **options)
    await rec.answered(timeout=60)
    return await rec.done(lambda r: not r.text.startswith(IN_PROGRESS), timeout=60)


class TestPermissions:
    async def test_members_are_refused_and_admin_ids_or_role_let_in(self, fake_discord, start_bot, bot_settings):
        mods = fake_discord.snowflake()
        fake_discord.add_role(mods, "Mods", MEMBER_PERMS)
        fake_discord.user_ids["mod"] = fake_discord.add_member("mod", roles=(mods,))
        settings = bot_settings.model_copy(
            update={"admin_role": "Mods", "admin_ids": {fake_discord.user_ids["carol"]}}
        )
        async with start_bot(settings) as drv:
            refused = await drv.slash("admin jobs", user="alice")
            await refused.answered()
            assert "Manage Server" in refused.text and refused.ephemeral
            for user in ("carol", "mod", "boss"):
                rec = await drv.slash("admin jobs", user=user)
                await rec.answered()
                assert "No training jobs yet" in rec.text, user
        synced = {c["name"]: c for c in fake_discord.commands[fake_discord.guild_id]}
        assert int(synced["admin"]["default_member_permissions"]) == discord.Permissions(manage_guild=True).value


class TestExportAndIndex:
    async def test_export_then_index_shows_who_is_included(self, drv):
        general = drv.fake.channel_ids["general"]
        seed_messages(drv.fake, general, 12, authors=("alice", "alice", "bob"))
        await drv.slash("clone optout", user="bob")
        rec = await admin(drv, "admin export")
        path = export_path(drv.settings.chat_dir, drv.fake.guild_id, general)
        assert "Exported <#" in rec.text and f"`{path}`" in rec.text
        assert len(json.loads(path.read_text())["messages"]) >= 12

        index = await admin(drv, "admin index", min_share=0.1)
        table = index.text
        assert "Alice" in table and "included" in table
        bob_row = next(line for line in table.splitlines() if line.startswith("Bob"))
        assert "opted out" in bob_row and drv.settings.users_json.exists()

    async def test_export_in_another_channel_after_a_date(self, drv):
        random = drv.fake.channel_ids["random"]
        old = datetime.now(timezone.utc) - timedelta(days=3)
        author = drv.fake.members[drv.fake.user_ids["carol"]]["user"]
        drv.fake.create_message(random, author, {"content": "too old"}, dispatch=False, at=old)
        seed_messages(drv.fake, random, 3)
        after = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
        # Issued in #random (the driver's `channel=` is where the command is typed), which it then exports.
        rec = await admin(drv, "admin export", channel="random", after=after)
        path = export_path(drv.settings.chat_dir, drv.fake.guild_id, random)
        assert f"<#{random}>" in rec.text and f"`{path}`" in rec.text
        texts = [m["content"] for m in json.loads(path.read_text())["messages"] if not m["author"]["isBot"]]
        assert texts == ["message 0", "message 1", "message 2"]

    async def test_bad_date_unreadable_channel_and_missing_exports_are_explained(self, drv):
        rec = await admin(drv, "admin export", after="yesterday")
        assert "expected a date like 2024-05-31" in rec.text
        drv.fake.inject("GET", r"/channels/\d+/messages$", 403)
        rec = await admin(drv, "admin export", channel="random")
        assert "can't read the history" in rec.text
        rec = await admin(drv, "admin index")
        assert "run /admin export first" in rec.text


class TestTrainRefusals:
    async def test_no_export_bad_name_and_bad_option_start_nothing(self, drv, tiny_model_dir, tmp_path):
        rec = await admin(drv, "admin train", max_steps=1)
        assert "run /admin export first" in rec.text
        write_train_config(drv.settings.config_path, tiny_model_dir, tmp_path)
        seed_messages(drv.fake, drv.fake.channel_ids["general"], 3)
        await admin(drv, "admin export")
        rec = await admin(drv, "admin train", name="../escape")
        assert "name '../escape'" in rec.text
        rec = await admin(drv, "admin train", chunk_size=8, epochs=0.0)
        assert "training.num_epochs" in rec.text
        assert await drv.bot.store.list_jobs() == []
        failed = [m["content"] for m in drv.fake.channel_messages(drv.fake.channel_ids["general"])]
        assert any(c.startswith("❌ Training `") and "not started" in c for c in failed)


class TestSchedule:
    async def test_schedule_persists_across_restart_and_off_removes_it(self, start_bot):
        async with start_bot() as drv:
            rec = await admin(drv, "admin schedule train", cron="0 4 * * sun")
            assert "Retraining scheduled `0 4 * * sun`" in rec.text and "04:00" in rec.text
            bad = await admin(drv, "admin schedule train", cron="every sunday")
            assert "expected 5 fields" in bad.text
        async with start_bot() as drv:
            key = f"retrain-{drv.fake.guild_id}"
            assert drv.bot.jobs.next_run(key) is not None
            rec = await admin(drv, "admin schedule train", cron="off")
            assert "off" in rec.text and drv.bot.jobs.next_run(key) is None
            assert await drv.bot.store.list_schedules() == []

    async def test_the_scheduled_action_exports_then_reports_a_failure_in_the_channel(self, drv):
        general = drv.fake.channel_ids["general"]
        seed_messages(drv.fake, general, 4)
        await drv.bot.get_cog("AdminCog").scheduled_retrain(drv.fake.guild_id)
        assert export_path(drv.settings.chat_dir, drv.fake.guild_id, general).exists()
        posted = [
            m["content"] for m in drv.fake.channel_messages(general) if m["author"]["id"] == str(drv.fake.app_id)
        ]
        assert any("Scheduled retraining failed" in c and "config file not found" in c for c in posted)


class TestJobsAndYoutube:
    async def test_cancel_of_an_unknown_job_and_youtube_off_are_explained(self, drv):
        rec = await admin(drv, "admin cancel", job=999)
        assert "no job 999" in rec.text
        rec = await admin(drv, "admin youtube")
        assert "YOUTUBE_API_KEY" in rec.text

    async def test_youtube_stats_when_configured(self, drv, tmp_path):
        from cloneus.config import YoutubeConfig
        from cloneus.plugins.youtube import YouTubeLinks

        drv.bot.youtube = YouTubeLinks(YoutubeConfig(db_path=str(tmp_path / "yt.db")))
        rec = await admin(drv, "admin youtube")
        assert "units_used: 0" in rec.text and "daily_quota: 10000" in rec.text


def write_train_config(path: Path, tiny_model_dir: Path, root: Path) -> None:
    """A training config for the tiny model: tiny chunks, a step logged and saved every step, files under root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""model:
  model_id: {tiny_model_dir}
lora:
  r: 2
  alpha: 4
training:
  chunk_size: 256
  batch_size: 1
  gradient_accumulation_steps: 1
  logging_steps: 1
  save_steps: 1
  learning_rate: 1.0e-3
  output_root: {root / "runs"}
dataset:
  min_session_length: 1
  eval_frac: 0.2
  hours_between_sessions: 0.001
  cache_dir: {root / "cache"}
prompt:
  template: "Chat between {{name_mapping}}"
""",
        encoding="utf-8",
    )


@pytest.fixture
def training_settings(bot_settings, tiny_model_dir, tmp_path):
    write_train_config(bot_settings.config_path, tiny_model_dir, tmp_path)
    return bot_settings


def chat_history(fake, channel_id: int, sessions: int = 6, per_session: int = 6) -> None:
    """Messages spread over `sessions` days, one burst a day (ids carry the time, so they get past timestamps)."""
    start = datetime.now(timezone.utc) - timedelta(days=sessions)
    authors = ("alice", "bob", "carol")
    for s in range(sessions):
        for i in range(per_session):
            when = start + timedelta(days=s, minutes=i)
            author = fake.members[fake.user_ids[authors[(s + i) % 3]]]["user"]
            fake.create_message(
                channel_id, author, {"content": f"session {s} line {i} hello"}, dispatch=False, at=when
            )


async def export_chat(drv) -> None:
    chat_history(drv.fake, drv.fake.channel_ids["general"])
    await admin(drv, "admin export")


@pytest.mark.slow
class TestTraining:
    async def test_train_reports_progress_registers_and_the_model_switches_in(self, start_bot, training_settings):
        async with start_bot(training_settings) as drv:
            drv.bot.jobs.poll_interval_s = POLL_S  # two tiny steps can finish within one default 2 s poll
            await export_chat(drv)
            rec = await admin(drv, "admin train", max_steps=2, name="fresh")
            assert "Started training job" in rec.text and "`fresh`" in rec.text
            job = (await drv.bot.store.list_jobs())[0]
            progress_id = job.message_id

            finished = await until(lambda: _final(drv.bot.store, job.id), timeout=180)
            assert finished.status == "done", finished.error
            # The job row is final just before the watcher makes its last edit.
            await drv.wait_for(lambda: drv.fake.history[progress_id][-1].startswith("✅"), timeout=30)
            versions = drv.fake.history[progress_id]
            assert versions[0].startswith("⏳ Training `fresh`: starting")
            assert any("/2 ·" in v or v.endswith("/2`") for v in versions[1:-1]), versions  # a progress edit
            assert versions[-1].startswith("✅ Training job") and "2/2" in versions[-1]
            summary = await drv.wait_for(lambda: _summary(drv.fake, "fresh"), timeout=30)
            assert [a["filename"] for a in summary["attachments"]] == ["loss.png"]
            metrics = json.loads((Path(job.config["log_file"]).parent / "progress.jsonl").read_text().splitlines()[-1])
            assert f"train loss {metrics['metrics']['train_loss']:.3f}" in summary["content"]
            assert " · wall " in summary["content"]
            entry = drv.bot.registry.get("fresh")
            assert entry is not None and Path(entry.ckpt).name.startswith("checkpoint-")

            switch = await drv.slash("model switch", name="fresh")
            await switch.answered(timeout=60)
            assert switch.text.startswith("Switched to `fresh`")
            speak = await drv.slash("clone speak", author="alice", max_new_tokens=3)
            await speak.answered()
            assert speak.text.startswith("**[Alice]**")  # display names come from the export

    async def test_restart_finds_the_running_job_and_cancel_stops_it(self, start_bot, training_settings):
        async with start_bot(training_settings) as drv:
            await export_chat(drv)
            await admin(drv, "admin train", max_steps=500, name="long")
            job = (await drv.bot.store.list_jobs())[0]
            assert job.pid is not None
        async with start_bot(training_settings) as drv:
            listed = await admin(drv, "admin jobs")
            assert f"Training job {job.id}" in listed.text and "running" in listed.text
            await until(lambda: _has_progress(drv.bot.store, job.id), timeout=120)
            rec = await admin(drv, "admin cancel", job=job.id)
            assert "Sent SIGTERM" in rec.text
            finished = await until(lambda: _final(drv.bot.store, job.id), timeout=120)
            assert finished.status == "cancelled" and finished.checkpoint
            await drv.wait_for(lambda: drv.fake.history[job.message_id][-1].startswith("⏹️ Training job"), 30)
            assert drv.bot.registry.get("long") is None


async def _final(store, job_id: int):
    job = await store.get_job(job_id)
    return job if job.status in ("done", "failed", "cancelled", "interrupted") else None


async def _has_progress(store, job_id: int) -> bool:
    job = await store.get_job(job_id)
    return bool(job.progress and job.progress.get("step"))


def _summary(fake, name: str):
    return next((m for m in fake.messages.values() if m["content"].startswith(f"✅ `{name}` finished")), None)


@pytest.fixture(scope="module")
def evaluable_checkpoint(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model trained two steps on a chat with a held-out split (what /admin eval needs)."""
    from cloneus.training.trainer import train
    from tests.evaluation.conftest import write_styled_chat
    from tests.training.conftest import tiny_config

    root = tmp_path_factory.mktemp("admin-eval")
    chat = write_styled_chat(root / "chat.csv")
    return train(tiny_config(tiny_model_dir, root, max_steps=2, save_steps=2), chatlog=chat, run_name="e").checkpoint


@pytest.mark.slow
class TestEval:
    async def test_eval_runs_as_a_job_posts_figures_and_chart_and_model_list_shows_them(
        self, drv, evaluable_checkpoint
    ):
        drv.bot.jobs.poll_interval_s = POLL_S
        drv.bot.registry.register("styled", "two steps", evaluable_checkpoint)
        rec = await admin(drv, "admin eval", model="styled", max_turns=6, max_replies=3)
        assert "Started eval job" in rec.text and "`styled`" in rec.text
        job = (await drv.bot.store.list_jobs())[0]
        assert job.config["kind"] == "eval"

        finished = await until(lambda: _final(drv.bot.store, job.id), timeout=300)
        assert finished.status == "done", finished.error
        await drv.wait_for(lambda: drv.fake.history[job.message_id][-1].startswith("✅ Eval job"), timeout=30)
        summary = await drv.wait_for(lambda: _posted(drv.fake, "📊 `styled` evaluated"), timeout=30)
        assert [a["filename"] for a in summary["attachments"]] == ["eval.png"]
        report = json.loads((evaluable_checkpoint / "eval.json").read_text())
        assert report["split"]["turns"] == 6 and report["split"]["replies"] == 3
        assert f"next speaker {100 * report['summary']['speaker_top1']:.1f}%" in summary["content"]
        assert drv.bot.registry.get("styled").eval == pytest.approx(report["summary"])

        listed = await drv.slash("model list")
        await listed.answered()
        shown = {f["name"]: f["value"] for f in listed.original["embeds"][0]["fields"]}
        assert "style attribution" in shown["styled"] and "not evaluated yet" in shown["▶ ★ tiny"]
        status = await drv.slash("model status")
        await status.answered()
        assert "not evaluated yet" in {f["name"]: f["value"] for f in status.original["embeds"][0]["fields"]}["eval"]

    async def test_eval_of_an_unknown_model_starts_nothing(self, drv):
        rec = await admin(drv, "admin eval", model="nope")
        assert "unknown model 'nope'" in rec.text
        assert await drv.bot.store.list_jobs() == []


def _posted(fake, prefix: str):
    return next((m for m in fake.messages.values() if m["content"].startswith(prefix)), None)
