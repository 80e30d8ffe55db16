"""The bot's settings, read from the environment (and `.env`, which only `run.py` loads).

Every value is checked at start-up, and every problem is reported at once, one line per variable, so an admin
fixes the whole `.env` in one go instead of restarting once per typo. The bot token is a `SecretStr`: it never
appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cloneus.errors import CloneusError

logger = logging.getLogger(__name__)

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class SettingsError(CloneusError):
    """One or more environment variables are missing or bad; the message has one line per variable."""


class Settings(BaseModel):
    """Everything the bot process needs to start, validated.

    Build it with `Settings.from_env(os.environ)`; the constructor is for tests that want explicit values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    token: SecretStr = Field(description="BOT_TOKEN: the bot account's token from the developer portal.")
    guild_ids: list[int] = Field(description="GUILDS_ID (or DEV_GUILDS_ID when TESTING=1): comma-separated ids.")
    channel_id: int | None = Field(
        None, description="CHANNEL_ID (or DEV_CHANNEL_ID): the channel whose messages feed the context; None = all."
    )
    testing: bool = Field(False, description="TESTING=1 selects the DEV_* guild and channel.")
    admin_role: str | None = Field(None, description="ADMIN_ROLE: a role name (or id) allowed to use /admin.")
    admin_ids: set[int] = Field(default_factory=set, description="ADMIN_IDS: user ids allowed to use /admin.")
    youtube_api_key: SecretStr | None = Field(None, description="YOUTUBE_API_KEY: enables YouTube link parsing.")
    db_path: Path = Field(Path("data/cloneus.db"), description="CLONEUS_DB: the SQLite file.")
    models_json: Path = Field(Path("config/models.json"), description="MODELS_JSON: the checkpoints the bot serves.")
    queue_depth: int = Field(8, gt=0, le=256, description="QUEUE_DEPTH: generations waiting before 'busy'.")
    clone_cooldown_s: float = Field(5.0, ge=0, description="CLONE_COOLDOWN_S: per-user cooldown on /clone.")
    ctx_limit: int = Field(30, gt=0, le=1000, description="CTX_LIMIT: messages of channel context sent to the model.")
    history_seed_n: int = Field(
        30, ge=0, le=1000, description="HISTORY_SEED_N: channel messages read at start-up to seed the context."
    )
    cancel_jobs_on_exit: bool = Field(
        False, description="CANCEL_JOBS_ON_EXIT: SIGTERM running training jobs when the bot stops."
    )
    config_path: Path = Field(
        Path("config/train_config.yaml"), description="CLONEUS_CONFIG: the training config /admin train uses."
    )
    chat_dir: Path = Field(Path("data/chat"), description="CHAT_DIR: where /admin export writes channel exports.")
    users_json: Path = Field(Path("config/users.json"), description="USERS_JSON: the user index /admin index writes.")

    @property
    def channel_ids(self) -> set[int]:
        """The channels whose messages feed the context; empty means every channel the bot can see."""
        return {self.channel_id} if self.channel_id is not None else set()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings from `env` (usually `os.environ` after `load_dotenv`).

        Args:
            env (`Mapping[str, str]`): environment variables.

        Raises:
            `SettingsError`: one line per missing or bad variable, naming it and what was expected.
        """
        problems: list[str] = []
        testing = _parse_bool(env, "TESTING", problems, default=False)
        guild_var, channel_var = ("DEV_GUILDS_ID", "DEV_CHANNEL_ID") if testing else ("GUILDS_ID", "CHANNEL_ID")
        values: dict[str, Any] = {"testing": testing}

        token = env.get("BOT_TOKEN", "").strip()
        if not token:
            problems.append("BOT_TOKEN is missing: set it to the bot token from the Discord developer portal")
        values["token"] = token

        guilds = _parse_ids(env, guild_var, problems)
        if guilds is not None and not guilds:
            problems.append(f"{guild_var} is missing: set it to the id of the server the bot serves")
        values["guild_ids"] = guilds or []
        channels = _parse_ids(env, channel_var, problems)
        if channels and len(channels) > 1:
            problems.append(f"{channel_var} must be one channel id, got {len(channels)}")
        values["channel_id"] = channels[0] if channels else None

        values["admin_role"] = env.get("ADMIN_ROLE", "").strip() or None
        values["admin_ids"] = set(_parse_ids(env, "ADMIN_IDS", problems) or [])
        values["youtube_api_key"] = env.get("YOUTUBE_API_KEY", "").strip() or None
        values["cancel_jobs_on_exit"] = _parse_bool(env, "CANCEL_JOBS_ON_EXIT", problems, default=False)
        for var, field in _PLAIN_VARS.items():
            if env.get(var, "").strip():
                values[field] = env[var].strip()

        try:
            settings = cls(**values) if not problems else None
        except ValidationError as e:
            field_to_var = {v: k for k, v in _PLAIN_VARS.items()}
            for err in e.errors():
                field = str(err["loc"][0])
                var = field_to_var.get(field, field.upper())
                # The input is shown for plain settings only; the secret ones are never echoed.
                problems.append(f"{var}={env.get(var, '')!r} is invalid: {err['msg']}")
        if problems or settings is None:
            raise SettingsError("bad bot settings:\n" + "\n".join(f"  {p}" for p in problems))
        return settings


_PLAIN_VARS = {
    "CLONEUS_DB": "db_path",
    "MODELS_JSON": "models_json",
    "QUEUE_DEPTH": "queue_depth",
    "CLONE_COOLDOWN_S": "clone_cooldown_s",
    "CTX_LIMIT": "ctx_limit",
    "HISTORY_SEED_N": "history_seed_n",
    "CLONEUS_CONFIG": "config_path",
    "CHAT_DIR": "chat_dir",
    "USERS_JSON": "users_json",
}


def _parse_bool(env: Mapping[str, str], var: str, problems: list[str], *, default: bool) -> bool:
    raw = env.get(var)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word not in FALSE_WORDS:
        problems.append(f"{var}={raw!r} is invalid: expected 1/0, true/false, yes/no or on/off")
    return False


def _parse_ids(env: Mapping[str, str], var: str, problems: list[str]) -> list[int] | None:
    """Parse a comma-separated list of Discord ids (snowflakes); None when one is bad (already reported)."""
    ids = []
    for part in env.get(var, "").replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit():
            problems.append(f"{var}={env[var]!r} is invalid: expected comma-separated numeric Discord ids")
            return None
        ids.append(int(part))
    return ids
