"""/model end to end: list, hot switch between registered checkpoints, status, unload."""

from __future__ import annotations

import math

import discord

from tests.bot.conftest import write_tiny_checkpoint

ADMIN = discord.Permissions.all().value  # what Discord puts in an administrator's interaction payload


def fields(rec) -> dict[str, str]:
    return {f["name"]: f["value"] for f in rec.original["embeds"][0]["fields"]}


async def test_list_marks_the_loaded_default_and_shows_perplexity(drv, tiny_checkpoint):
    drv.bot.registry.register("tuned", "after training", tiny_checkpoint, {"eval_loss": 1.0})
    rec = await drv.slash("model list")
    await rec.answered()
    shown = fields(rec)
    assert set(shown) == {"▶ ★ tiny", "tuned"}
    assert f"eval perplexity: {math.exp(1.0):.2f}" in shown["tuned"] and str(tiny_checkpoint) in shown["tuned"]
    assert "eval perplexity: ?" in shown["▶ ★ tiny"]


async def test_list_without_models_says_how_to_get_one(start_bot, bot_settings, tmp_path):
    empty = bot_settings.model_copy(update={"models_json": tmp_path / "none.json"})
    async with start_bot(empty) as drv:
        rec = await drv.slash("model list")
        await rec.answered()
        assert "No models registered yet" in rec.text
        status = await drv.slash("model status")
        await status.answered()
        assert status.original["embeds"][0]["title"] == "Model: — (not loaded)"


async def test_switch_hot_swaps_to_a_registered_name_only(drv, tiny_model_dir, tmp_path):
    other = write_tiny_checkpoint(tiny_model_dir, tmp_path / "other" / "checkpoint-2")
    drv.bot.registry.register("other", "a second adapter", other)
    assert [c["value"] for c in await drv.autocomplete("model switch", "name", "oth")] == ["other"]
    rec = await drv.slash("model switch", name="other", user="carol")
    await rec.answered()
    assert rec.text.startswith("Switched to `other` in ") and rec.text.endswith(" s.")
    status = drv.bot.engine.status()
    assert (status.model, status.checkpoint) == ("other", str(other))

    for name in ("nope", str(other)):
        refused = await drv.slash("model switch", name=name)
        await refused.answered()
        assert f"unknown model {name!r}" in refused.text and refused.ephemeral
    assert drv.bot.engine.status().model == "other"


async def test_status_reports_model_device_and_queue(drv, tiny_checkpoint):
    rec = await drv.slash("model status")
    await rec.answered()
    embed = rec.original["embeds"][0]
    shown = fields(rec)
    assert embed["title"] == "Model: tiny (loaded)"
    assert shown["device"] == "cpu" and shown["queue"] == f"0 / {drv.settings.queue_depth}"
    assert str(tiny_checkpoint) in shown["checkpoint"] and shown["memory"].endswith(" MB")


async def test_unload_is_for_admins_and_silences_the_clones(drv):
    denied = await drv.slash("model unload", user="alice")
    await denied.answered()
    assert "Manage Server" in denied.text and drv.bot.engine.status().loaded
    rec = await drv.slash("model unload", user="boss", perms=ADMIN)
    await rec.answered()
    assert "unloaded" in rec.text and not drv.bot.engine.status().loaded
    speak = await drv.slash("clone speak", author="alice")
    await speak.answered()
    assert "no model is loaded" in speak.text
    again = await drv.slash("model unload", user="boss", perms=ADMIN)
    await again.answered()
    assert "no model is loaded" in again.text
