"""Settings from the environment: every bad value named, the token never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError

TOKEN = "MTIz.secret-token-value"
BASE = {"BOT_TOKEN": TOKEN, "GUILDS_ID": "111", "CHANNEL_ID": "222"}


class TestSettingsFromEnv:
    def test_minimal_env_gives_defaults(self):
        s = Settings.from_env(BASE)
        assert s.guild_ids == [111]
        assert s.channel_id == 222
        assert s.channel_ids == {222}
        assert s.testing is False
        assert s.queue_depth == 8
        assert s.db_path == Path("data/cloneus.db")
        assert s.models_json == Path("config/models.json")
        assert s.token.get_secret_value() == TOKEN

    def test_testing_selects_dev_guild_and_channel(self):
        env = {**BASE, "TESTING": "1", "DEV_GUILDS_ID": "333, 444", "DEV_CHANNEL_ID": "555"}
        s = Settings.from_env(env)
        assert s.testing is True
        assert s.guild_ids == [333, 444]
        assert s.channel_id == 555

    def test_testing_without_dev_guild_names_dev_variable(self):
        with pytest.raises(SettingsError, match="DEV_GUILDS_ID is missing"):
            Settings.from_env({**BASE, "TESTING": "yes"})

    def test_optional_values_are_parsed(self):
        env = {
            **BASE,
            "ADMIN_ROLE": "Mods",
            "ADMIN_IDS": "1,2",
            "CLONEUS_DB": "/tmp/x.db",
            "QUEUE_DEPTH": "3",
            "CLONE_COOLDOWN_S": "0.5",
            "CANCEL_JOBS_ON_EXIT": "true",
            "YOUTUBE_API_KEY": "yt-secret",
        }
        s = Settings.from_env(env)
        assert (s.admin_role, s.admin_ids, s.db_path, s.queue_depth) == ("Mods", {1, 2}, Path("/tmp/x.db"), 3)
        assert s.clone_cooldown_s == 0.5 and s.cancel_jobs_on_exit is True
        assert s.youtube_api_key.get_secret_value() == "yt-secret"

    def test_every_problem_is_reported_once_per_variable(self):
        env = {"GUILDS_ID": "12x", "CHANNEL_ID": "abc", "QUEUE_DEPTH": "0", "TESTING": "maybe"}
        with pytest.raises(SettingsError) as info:
            Settings.from_env(env)
        lines = str(info.value).splitlines()[1:]
        names = [line.split()[0].split("=")[0] for line in lines]
        assert sorted(names) == ["BOT_TOKEN", "CHANNEL_ID", "GUILDS_ID", "TESTING"]

    def test_bad_numeric_setting_names_variable(self):
        with pytest.raises(SettingsError, match="QUEUE_DEPTH='0' is invalid"):
            Settings.from_env({**BASE, "QUEUE_DEPTH": "0"})

    def test_token_never_in_repr_or_errors(self):
        s = Settings.from_env(BASE)
        assert TOKEN not in repr(s) and TOKEN not in str(s)
        with pytest.raises(SettingsError) as info:
            Settings.from_env({**BASE, "YOUTUBE_API_KEY": "k", "CTX_LIMIT": "-1"})
        assert TOKEN not in str(info.value)
        assert "CTX_LIMIT" in str(info.value)

    def test_channel_is_optional(self):
        s = Settings.from_env({"BOT_TOKEN": TOKEN, "GUILDS_ID": "1"})
        assert s.channel_id is None and s.channel_ids == set()
