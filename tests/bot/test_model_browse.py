"""/model list all:true and /model register (issue 12 §7): every checkpoint under the runs directory with its
eval figures when eval.json is there (read defensively), and registration restricted to admins and to that
directory."""

from __future__ import annotations

import json
import shutil

import discord
import pytest

from tests.bot.test_cog_admin import write_train_config

ADMIN = discord.Permissions.all().value


@pytest.fixture
def runs(bot_settings, tiny_model_dir, tiny_checkpoint, tmp_path):
    """tmp/runs with three checkpoints: one evaluated, one with a broken eval.json, one without."""
    write_train_config(bot_settings.config_path, tiny_model_dir, tmp_path)
    root = tmp_path / "runs"
    paths = [root / "tiny" / "weekly" / f"checkpoint-{s}" for s in (5, 10)] + [root / "tiny" / "old" / "checkpoint-1"]
    for path in paths:
        shutil.copytree(tiny_checkpoint, path)
    (paths[1] / "eval.json").write_text(json.dumps({"summary": {"perplexity": 12.34, "speaker_top1": 0.5}}))
    (paths[2] / "eval.json").write_text("{not json")
    return root, paths


async def answer(drv, command: str, user: str = "boss", perms: int | None = ADMIN, **options):
    rec = await drv.slash(command, user=user, perms=perms, **options)
    await rec.answered()
    return rec


class TestBrowse:
    async def test_admins_page_through_every_checkpoint_with_eval_figures(self, drv, runs):
        root, paths = runs
        drv.bot.registry.register("weekly5", "", paths[0])
        rec = await answer(drv, "model list", all=True)
        assert rec.ephemeral
        text = rec.original["content"]
        assert f"3 checkpoints under {root}" in text
        assert f"{paths[0]} (registered as weekly5)" in text
        assert "perplexity 12.3" in text and "next speaker 50" in text
        assert text.count("no eval (/admin eval)") == 2  # none, and the unreadable one

    async def test_members_are_refused(self, drv, runs):
        rec = await answer(drv, "model list", user="alice", perms=None, all=True)
        assert "Manage Server" in rec.text and rec.ephemeral


class TestRegister:
    async def test_register_adds_the_entry_with_its_eval(self, drv, runs):
        root, paths = runs
        rec = await answer(drv, "model register", name="weekly", ckpt=str(paths[1]), desc="ten steps")
        assert "Registered `weekly`" in rec.text
        entry = drv.bot.registry.get("weekly")
        assert entry.desc == "ten steps" and entry.eval == {"perplexity": 12.34, "speaker_top1": 0.5}
        saved = json.loads(drv.settings.models_json.read_text())
        assert "weekly" in [m["name"] for m in saved["models"]]
        relative = await answer(drv, "model register", name="old", ckpt="tiny/old/checkpoint-1")
        assert "Registered `old`" in relative.text

    async def test_refusals_are_private_and_register_nothing(self, drv, runs, tiny_checkpoint, tmp_path):
        root, paths = runs
        (root / "tiny" / "empty" / "checkpoint-3").mkdir(parents=True)
        for options, expected in (
            ({"name": "x", "ckpt": str(tiny_checkpoint)}, "only checkpoints under"),
            ({"name": "x", "ckpt": "tiny/nowhere"}, "no such directory"),
            ({"name": "x", "ckpt": "tiny/weekly"}, "expected a checkpoint-<step>"),
            ({"name": "x", "ckpt": "tiny/empty/checkpoint-3"}, "checkpoint-3"),
            ({"name": "tiny", "ckpt": str(paths[0])}, "already registered"),
            ({"name": "a`b", "ckpt": str(paths[0])}, "no backticks"),
        ):
            rec = await answer(drv, "model register", **options)
            assert expected in rec.text and rec.ephemeral, (options, rec.text)
        member = await answer(drv, "model register", user="alice", perms=None, name="y", ckpt=str(paths[0]))
        assert "Manage Server" in member.text
        assert drv.bot.registry.names() == ["tiny"]
