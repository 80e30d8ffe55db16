"""/sampling end to end: per-channel settings validated by SamplingOptions and layered under command options."""

from __future__ import annotations

from cloneus.inference.sampling import load_presets
from tests.bot.test_cog_clone import recorded, set_option


def fields(rec) -> dict[str, str]:
    return {f["name"]: f["value"] for f in rec.original["embeds"][0]["fields"]}


class TestShowAndSet:
    async def test_set_values_are_typed_stored_and_shown(self, drv):
        channel = drv.fake.channel_ids["general"]
        await set_option(drv, "temperature", "0.7")
        await set_option(drv, "top_k", "12")
        await set_option(drv, "webhook", "off")
        settings = await drv.bot.store.get_channel_settings(channel)
        assert settings["sampling"] == {"temperature": 0.7, "top_k": 12} and settings["webhook"] is False
        show = await drv.slash("sampling show")
        await show.answered()
        shown = fields(show)
        assert "`temperature` = `0.7`" in shown["options (preset + channel)"] and shown["preset"] == "none"
        assert show.ephemeral

    async def test_out_of_range_value_names_the_valid_range(self, drv):
        rec = await drv.slash("sampling set", key="top_p", value="1.5", user="boss")
        await rec.answered()
        assert "top_p='1.5'" in rec.text and "[0, 1]" in rec.text and rec.ephemeral
        unknown = await drv.slash("sampling set", key="temprature", value="1", user="boss")
        await unknown.answered()
        assert "unknown setting 'temprature'" in unknown.text
        assert await drv.bot.store.get_channel_settings(drv.fake.channel_ids["general"]) == {}

    async def test_key_autocomplete_offers_options_and_bot_settings(self, drv):
        choices = [c["value"] for c in await drv.autocomplete("sampling set", "key", "temp")]
        assert "temperature" in choices and "temperature_last" in choices
        assert "autoreply" in [c["value"] for c in await drv.autocomplete("sampling set", "key", "auto")]

    async def test_autoreply_lurk_is_normalised(self, drv):
        await set_option(drv, "autoreply", "lurk(0.6)")
        settings = await drv.bot.store.get_channel_settings(drv.fake.channel_ids["general"])
        assert settings["autoreply"] == "lurk:0.6"


class TestPresetAndReset:
    async def test_preset_applies_and_command_options_override_it(self, drv):
        rec = await drv.slash("sampling preset", name="cs", user="boss")
        await rec.answered()
        assert "Preset `cs`" in rec.text
        await set_option(drv, "top_k", "7")
        speak = await drv.slash("clone speak", author="alice", temperature=0.3, max_new_tokens=2)
        await speak.answered()
        sampling = (await recorded(drv, speak.original_id)).request["sampling"]
        preset = load_presets()["cs"].model_dump(exclude_unset=True)
        assert sampling == preset | {"top_k": 7, "temperature": 0.3, "max_new_tokens": 2}

    async def test_unknown_preset_lists_the_known_ones(self, drv):
        rec = await drv.slash("sampling preset", name="spicy", user="boss")
        await rec.answered()
        assert "unknown preset 'spicy'" in rec.text and "miro" in rec.text
        names = [c["value"] for c in await drv.autocomplete("sampling preset", "name", "m")]
        assert set(names) == {n for n in load_presets() if "m" in n}

    async def test_reset_forgets_everything_and_needs_manage_messages(self, drv):
        channel = drv.fake.channel_ids["general"]
        await set_option(drv, "temperature", "0.5")
        await set_option(drv, "autoreply", "always")
        denied = await drv.slash("sampling reset", user="carol")
        await denied.answered()
        assert "Manage Messages" in denied.text and await drv.bot.store.get_channel_settings(channel)
        for command, options in (
            ("sampling set", {"key": "top_k", "value": "1"}),
            ("sampling preset", {"name": "gd"}),
        ):
            refused = await drv.slash(command, user="carol", **options)
            await refused.answered()
            assert "Manage Messages" in refused.text
        rec = await drv.slash("sampling reset", user="boss")
        await rec.answered()
        assert await drv.bot.store.get_channel_settings(channel) == {}
