"""/sampling words and sampling profiles end to end (issue 12 §4, §5): word rules stored per channel and sent with
every generation, profiles per guild, checkpoint defaults written by admins only."""

from __future__ import annotations

import json

import discord

from tests.bot.test_cog_clone import recorded

ADMIN = discord.Permissions.all().value


async def answer(drv, command: str, user: str = "boss", perms: int | None = ADMIN, **options):
    rec = await drv.slash(command, user=user, perms=perms, **options)
    await rec.answered()
    return rec


class TestWords:
    async def test_ban_boost_show_clear_and_every_reply_carries_them(self, drv):
        channel = drv.fake.channel_ids["general"]
        rec = await answer(drv, "sampling words", ban="darn, no way", boost="pizza:+2, meh:-1.5")
        assert "banned darn, no way" in rec.text and "pizza:+2" in rec.text and not rec.ephemeral
        show = await answer(drv, "sampling words", user="alice", perms=None)
        assert show.ephemeral and "Banned: darn, no way" in show.text and "meh:-1.5" in show.text
        speak = await drv.slash("clone speak", author="alice", max_new_tokens=2)
        await speak.answered()
        reply = await recorded(drv, speak.original_id)
        assert reply.request["sampling"]["banned_words"] == ["darn", "no way"]
        assert reply.request["sampling"]["word_bias"] == {"meh": -1.5, "pizza": 2.0}
        clear = await answer(drv, "sampling words", clear=True)
        assert "Removed 4 word rules" in clear.text and await drv.bot.store.word_rules(channel) == []

    async def test_bad_rules_are_refused_privately_and_store_nothing(self, drv):
        channel = drv.fake.channel_ids["general"]
        for options, expected in (
            ({"boost": "pizza"}, "expected word:number"),
            ({"boost": "pizza:lots"}, "expected word:number"),
            ({"boost": "pizza:+50"}, "outside [-20, 20]"),
            ({"ban": " , "}, "name at least one word"),
            ({"ban": "x", "clear": True}, "second command"),
        ):
            rec = await answer(drv, "sampling words", **options)
            assert expected in rec.text and rec.ephemeral, (options, rec.text)
        rec = await answer(drv, "sampling words", user="alice", perms=None, ban="darn")
        assert "Manage Messages" in rec.text and rec.ephemeral
        rec = await answer(drv, "sampling set", key="banned_words", value="darn")
        assert "/sampling words" in rec.text and rec.ephemeral
        assert await drv.bot.store.word_rules(channel) == []


class TestProfiles:
    async def test_save_list_load_per_guild(self, drv):
        await answer(drv, "sampling set", key="temperature", value="0.6")
        await answer(drv, "sampling preset", name="mp")
        saved = await answer(drv, "sampling save", name="calm")
        assert "Saved profile `calm`" in saved.text
        await answer(drv, "sampling reset")
        listing = await answer(drv, "sampling profiles", user="alice", perms=None)
        assert "calm" in listing.text and "temperature" in listing.text and listing.ephemeral
        loaded = await answer(drv, "sampling load", name="calm", channel="random")
        assert "Loaded profile `calm`" in loaded.text
        random = await drv.bot.store.get_channel_settings(drv.fake.channel_ids["random"])
        assert random["preset"] == "mp" and random["sampling"] == {"temperature": 0.6}

    async def test_profile_refusals(self, drv):
        rec = await answer(drv, "sampling load", name="nope")
        assert "no profile 'nope'" in rec.text and rec.ephemeral
        rec = await answer(drv, "sampling save", name="x" * 40)
        assert "1-32 characters" in rec.text and rec.ephemeral
        rec = await answer(drv, "sampling save", name="mine", user="alice", perms=None)
        assert "Manage Messages" in rec.text and rec.ephemeral
        await answer(drv, "sampling save", name="calm")
        again = await answer(drv, "sampling save", name="calm")
        assert "already exists" in again.text and "overwrite:true" in again.text and again.ephemeral
        replaced = await answer(drv, "sampling save", name="calm", overwrite=True)
        assert "Saved profile `calm`" in replaced.text


class TestCheckpointDefaults:
    async def test_admins_write_generation_config_and_overwrite_needs_asking(self, drv, tiny_checkpoint, tmp_path):
        import shutil

        ckpt = tmp_path / "own-ckpt"
        shutil.copytree(tiny_checkpoint, ckpt)
        drv.bot.registry.register("own", "a copy", ckpt)
        switched = await answer(drv, "model switch", name="own")
        assert "Switched" in switched.text
        await answer(drv, "sampling set", key="temperature", value="0.55")
        refused = await answer(drv, "sampling save", name="x", default=True, user="alice", perms=1 << 13)
        assert "Manage Server" in refused.text and refused.ephemeral
        rec = await answer(drv, "sampling save", default=True)
        assert "generation_config.json" in rec.text
        written = json.loads((ckpt / "generation_config.json").read_text())
        assert written["temperature"] == 0.55
        again = await answer(drv, "sampling save", default=True)
        assert "overwrite:true" in again.text and again.ephemeral
        await answer(drv, "sampling set", key="temperature", value="0.65")
        await answer(drv, "sampling save", default=True, overwrite=True)
        assert json.loads((ckpt / "generation_config.json").read_text())["temperature"] == 0.65
