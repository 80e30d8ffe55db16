"""`/sampling`: per-channel generation defaults (sampling options, a preset, auto-reply, webhook posting).

Anyone may look (`show`); changing a channel's settings needs Manage Messages there (or admin rights), since
they apply to everyone's replies and decide whether the bot talks unprompted.

A channel's settings are rows of the store's `channel_settings` table: `preset` (a name from
`config/sampling_presets.yaml`), `sampling` (a dict of option overrides), `autoreply` (`off`, `always` or
`lurk:<threshold>`), `autoreply_trigger` (`any`, `mention`, `opted-in`), `autoreply_author` (a name),
`autoreply_authors` (a list of names) and `webhook` (bool). The options of one request are layered, each layer
validated by `SamplingOptions`: the preset's values, then the channel's overrides, then the options typed on the
command.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.speakers import Speakers, parse_names
from cloneus.errors import CloneusError
from cogs.admin import admin_only, is_admin

if TYPE_CHECKING:
    from bot.client import CloneusBot
    from bot.store import Store

logger = logging.getLogger(__name__)

BOT_SETTINGS = {
    "autoreply": "off | always | lurk:<threshold 0-1> — answer organic messages as a predicted author",
    "autoreply_trigger": "any | mention | opted-in — which messages auto-reply answers",
    "autoreply_author": "<name> | none — always answer as this clone",
    "autoreply_authors": "<names, comma-separated> | none — the candidates auto-reply picks among",
    "webhook": "on | off — post clone replies through a webhook with the member's name and avatar",
}
AUTOREPLY_TRIGGERS = ("any", "mention", "opted-in")
WORD_KEYS = frozenset({"banned_words", "word_bias"})  # stored as word rules, set with /sampling words
PROFILE_NAME = re.compile(r"^[\w \-]{1,32}$")
MAX_WORD_RULES = 50  # per channel; each word adds up to four token sequences to every generation
NONE_WORDS = frozenset({"none", "off", "clear"})
LURK = re.compile(r"^lurk(?:[:( ]\s*([0-9.]+)\s*\)?)?$")
DEFAULT_LURK_THRESHOLD = 0.5
WEBHOOK_WORDS = {
    "on": True,
    "true": True,
    "yes": True,
    "1": True,
    "off": False,
    "false": False,
    "no": False,
    "0": False,
}
AUTOCOMPLETE_LIMIT = 25  # Discord shows at most 25 choices


def sampling_fields() -> dict[str, Any]:
    from cloneus.inference.sampling import SamplingOptions

    return SamplingOptions.model_fields


def validate_sampling(values: dict[str, Any]) -> dict[str, Any]:
    """Validate sampling overrides; returns them typed (`"0.7"` → 0.7), only the keys given.

    Raises:
        `ConfigError`: one line per bad key, naming the key, the value and its valid range.
    """
    from cloneus.inference.sampling import SamplingOptions

    options = SamplingOptions.parse(values, source="sampling").model_dump()
    return {key: options[key] for key in values}


def parse_autoreply(raw: str) -> str:
    """Normalise `off`, `always`, `lurk`, `lurk:0.6`, `lurk(0.6)` to `off` / `always` / `lurk:<t>`.

    Raises:
        `CloneusError`: anything else, or a threshold outside 0-1.
    """
    word = raw.strip().lower()
    if word in ("off", "always"):
        return word
    match = LURK.match(word)
    if match is None:
        raise CloneusError(f"autoreply={raw!r}: expected off, always or lurk:<threshold between 0 and 1>")
    threshold = float(match.group(1)) if match.group(1) else DEFAULT_LURK_THRESHOLD
    if not 0 <= threshold <= 1:
        raise CloneusError(f"autoreply lurk threshold {threshold} must be between 0 and 1")
    return f"lurk:{threshold:g}"


def parse_boosts(raw: str) -> dict[str, float]:
    """`"pizza:+2, no way:-1.5"` → `{"pizza": 2.0, "no way": -1.5}`.

    Raises:
        `CloneusError`: an entry without `word:number`, naming it.
    """
    out = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        word, sep, number = entry.rpartition(":")
        try:
            bias = float(number)
        except ValueError:
            bias = None
        if not sep or not word.strip() or bias is None:
            raise CloneusError(f"boost entry {entry!r}: expected word:number, e.g. pizza:+2 or meh:-1.5")
        out[word.strip()] = bias
    return out


def describe_profile(profile: dict[str, Any]) -> str:
    """`preset mp, temperature=0.6` (or `model defaults`)."""
    parts = [f"preset {profile['preset']}"] if profile.get("preset") else []
    parts += [f"{k}={v!r}" for k, v in sorted((profile.get("sampling") or {}).items())]
    return ", ".join(parts) or "model defaults"


def autoreply_mode(setting: str | None) -> str | tuple[str, float] | None:
    """The stored auto-reply setting as a `predict_author` mode: None (off), 'weighted', or ('lurk', t)."""
    if not setting or setting == "off":
        return None
    if setting == "always":
        return "weighted"
    return ("lurk", float(setting.partition(":")[2]))


async def request_sampling(
    store: Store, channel_id: int, overrides: dict[str, Any] | None = None, preset: str | None = None
) -> dict[str, Any]:
    """The sampling options of one request in a channel: preset ← channel overrides ← `overrides` (validated).

    Args:
        store (`Store`): where the channel's settings live.
        channel_id (`int`): the channel.
        overrides (`dict`, *optional*): options typed on the command; `None` values are unset options.
        preset (`str`, *optional*): a preset named on the command, used instead of the channel's.

    Raises:
        `CloneusError`: an unknown preset, or an option out of range (names it and the range).
    """
    from cloneus.inference.sampling import load_presets

    settings = await store.get_channel_settings(channel_id)
    values: dict[str, Any] = {}
    name = preset or settings.get("preset")
    if name:
        presets = load_presets()
        if name in presets:
            values.update(presets[name].model_dump(exclude_unset=True))
        elif preset:
            raise CloneusError(f"unknown preset {preset!r}; choose one of: {', '.join(sorted(presets))}")
        else:
            logger.warning("channel %d uses preset %r, which no longer exists; ignoring it", channel_id, name)
    values.update(settings.get("sampling") or {})
    rules = await store.word_rules(channel_id)
    if rules:
        values["banned_words"] = [r.word for r in rules if r.bias is None]
        values["word_bias"] = {r.word: r.bias for r in rules if r.bias is not None}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_sampling(values)


async def channel_moderator(interaction: discord.Interaction) -> bool:
    """Check predicate: changing a channel's settings needs Manage Messages there, or admin rights."""
    if interaction.permissions.manage_messages or is_admin(
        interaction.user, interaction.permissions, interaction.client.settings
    ):
        return True
    raise app_commands.CheckFailure("changing this channel's generation settings needs Manage Messages (or admin).")


class SamplingCog(commands.GroupCog, group_name="sampling", group_description="Generation settings of this channel"):
    """Per-channel sampling defaults; options given on a `/clone` command override them."""

    def __init__(self, bot: CloneusBot):
        self.bot = bot

    async def _key_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        keys = [*BOT_SETTINGS, *sampling_fields()]
        return [app_commands.Choice(name=k, value=k) for k in keys if current.lower() in k][:AUTOCOMPLETE_LIMIT]

    async def _preset_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        from cloneus.inference.sampling import load_presets

        names = sorted(load_presets())
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:AUTOCOMPLETE_LIMIT]

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Show this channel's preset, overrides, auto-reply and webhook settings."""
        settings = await self.bot.store.get_channel_settings(interaction.channel_id)
        values = await request_sampling(self.bot.store, interaction.channel_id)
        embed = discord.Embed(title=f"Sampling in #{getattr(interaction.channel, 'name', interaction.channel_id)}")
        embed.add_field(name="preset", value=settings.get("preset") or "none")
        embed.add_field(name="autoreply", value=settings.get("autoreply", "off"))
        embed.add_field(name="autoreply_trigger", value=settings.get("autoreply_trigger", "any"))
        embed.add_field(name="autoreply_author", value=settings.get("autoreply_author") or "predicted")
        embed.add_field(name="autoreply_authors", value=", ".join(settings.get("autoreply_authors") or []) or "all")
        embed.add_field(name="webhook", value="on" if settings.get("webhook") else "off")
        overrides = "\n".join(f"`{k}` = `{v!r}`" for k, v in sorted(values.items())) or "model defaults"
        embed.add_field(name="options (preset + channel)", value=overrides[:1024], inline=False)
        embed.set_footer(text="Change with /sampling set key value, /sampling preset, /sampling reset")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="set")
    @app_commands.check(channel_moderator)
    @app_commands.describe(key="A sampling option (e.g. temperature), autoreply or webhook", value="The new value")
    @app_commands.autocomplete(key=_key_autocomplete)
    async def set_(self, interaction: discord.Interaction, key: str, value: str) -> None:
        """Set one generation option for this channel (validated; the error names the valid range)."""
        channel_id = interaction.channel_id
        if key == "autoreply":
            shown = parse_autoreply(value)
            await self.bot.store.set_channel_setting(channel_id, key, shown)
        elif key == "autoreply_trigger":
            shown = value.strip().lower()
            if shown not in AUTOREPLY_TRIGGERS:
                raise CloneusError(f"autoreply_trigger={value!r}: expected one of {', '.join(AUTOREPLY_TRIGGERS)}")
            await self.bot.store.set_channel_setting(channel_id, key, shown)
        elif key in ("autoreply_author", "autoreply_authors"):
            shown = await self._autoreply_names(interaction.guild, key, value)
            await self.bot.store.set_channel_setting(channel_id, key, shown)
        elif key == "webhook":
            if value.strip().lower() not in WEBHOOK_WORDS:
                raise CloneusError(f"webhook={value!r}: expected on or off")
            shown = WEBHOOK_WORDS[value.strip().lower()]
            await self.bot.store.set_channel_setting(channel_id, key, shown)
        elif key in WORD_KEYS:
            raise CloneusError(f"{key} is set with /sampling words ban:... boost:..., per channel")
        elif key in sampling_fields():
            current = (await self.bot.store.get_channel_settings(channel_id)).get("sampling") or {}
            stored = validate_sampling(current | {key: value})
            shown = stored[key]
            await self.bot.store.set_channel_setting(channel_id, "sampling", stored)
        else:
            raise CloneusError(f"unknown setting {key!r}; choose {', '.join(BOT_SETTINGS)} or a sampling option")
        await interaction.response.send_message(f"Set `{key}` = `{shown!r}` for this channel.")

    async def _autoreply_names(self, guild: discord.Guild | None, key: str, value: str) -> str | list[str] | None:
        """A fixed author or candidate list, resolved against the loaded model and opt-outs; None clears it."""
        if value.strip().lower() in NONE_WORDS:
            return None
        if key == "autoreply_author":
            return await Speakers(self.bot).resolve(guild, value.strip())
        return await Speakers(self.bot).resolve_all(guild, parse_names(value, key))

    @app_commands.command(name="preset")
    @app_commands.check(channel_moderator)
    @app_commands.describe(name="A preset from config/sampling_presets.yaml")
    @app_commands.autocomplete(name=_preset_autocomplete)
    async def preset(self, interaction: discord.Interaction, name: str) -> None:
        """Use a named sampling preset in this channel (channel overrides still apply on top)."""
        from cloneus.inference.sampling import load_presets

        presets = load_presets()
        if name not in presets:
            raise CloneusError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(presets))}")
        await self.bot.store.set_channel_setting(interaction.channel_id, "preset", name)
        options = ", ".join(f"{k}={v!r}" for k, v in presets[name].model_dump(exclude_unset=True).items())
        await interaction.response.send_message(f"Preset `{name}` is now used here ({options or 'defaults'}).")

    @app_commands.command(name="words")
    @app_commands.describe(
        ban='Words or phrases never generated, comma-separated: "darn, no way"',
        boost='Weighted words, comma-separated word:bias (-20 to 20): "pizza:+2, meh:-1.5"',
        clear="Remove every word rule of this channel",
    )
    async def words(
        self, interaction: discord.Interaction, ban: str | None = None, boost: str | None = None, clear: bool = False
    ) -> None:
        """Show this channel's banned and weighted words, or change them (changing needs Manage Messages)."""
        channel_id = interaction.channel_id
        if ban is None and boost is None and not clear:
            rules = await self.bot.store.word_rules(channel_id)
            banned = ", ".join(r.word for r in rules if r.bias is None) or "none"
            weighted = ", ".join(f"{r.word}:{r.bias:+g}" for r in rules if r.bias is not None) or "none"
            await interaction.response.send_message(f"Banned: {banned}\nWeighted: {weighted}", ephemeral=True)
            return
        await channel_moderator(interaction)
        if clear and (ban is not None or boost is not None):
            raise CloneusError("clear:true removes every rule; give ban/boost in a second command")
        if clear:
            removed = await self.bot.store.clear_word_rules(channel_id)
            await interaction.response.send_message(f"Removed {removed} word rules from this channel.")
            return
        banned = [w.strip() for w in (ban or "").split(",") if w.strip()]
        weighted = parse_boosts(boost or "")
        validate_sampling({"banned_words": banned, "word_bias": weighted})
        existing = {r.word for r in await self.bot.store.word_rules(channel_id)}
        if len(existing | set(banned) | set(weighted)) > MAX_WORD_RULES:
            raise CloneusError(f"at most {MAX_WORD_RULES} word rules per channel; /sampling words clear:true first")
        if not banned and not weighted:
            raise CloneusError('name at least one word: ban:"a, b" or boost:"x:+2"')
        await self.bot.store.set_word_rules(channel_id, banned, weighted)
        parts = [f"banned {', '.join(banned)}"] if banned else []
        parts += [f"weighted {', '.join(f'{w}:{b:+g}' for w, b in weighted.items())}"] if weighted else []
        await interaction.response.send_message(f"Word rules of this channel: {'; '.join(parts)}.")

    async def _profile_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice]:
        names = await self.bot.store.list_profiles(interaction.guild_id or 0)
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n.lower()][:25]

    @app_commands.command(name="save")
    @app_commands.describe(
        name="Profile name (1-32 letters, digits, spaces, - or _)",
        default="Admins: write this channel's settings as the loaded checkpoint's defaults instead",
        overwrite="Replace a profile (or checkpoint defaults) that already exists",
    )
    async def save(
        self, interaction: discord.Interaction, name: str | None = None, default: bool = False, overwrite: bool = False
    ) -> None:
        """Save this channel's preset and options as a named profile of the server (or as checkpoint defaults)."""
        if default:
            await self._save_default(interaction, overwrite)
            return
        await channel_moderator(interaction)
        if name is None or not PROFILE_NAME.match(name.strip()):
            raise CloneusError(f"name={name!r}: 1-32 characters of letters, digits, spaces, - or _")
        name = name.strip()
        settings = await self.bot.store.get_channel_settings(interaction.channel_id)
        profile = {k: settings[k] for k in ("preset", "sampling") if settings.get(k)}
        if not overwrite and await self.bot.store.get_profile(interaction.guild_id, name) is not None:
            raise CloneusError(f"profile {name!r} already exists; add overwrite:true to replace it")
        await self.bot.store.save_profile(interaction.guild_id, name, profile, interaction.user.id)
        await interaction.response.send_message(f"Saved profile `{name}`: {describe_profile(profile)}.")

    async def _save_default(self, interaction: discord.Interaction, overwrite: bool) -> None:
        """Write the channel's options, over the checkpoint's current defaults, into its generation_config.json."""
        from cloneus.inference.checkpoint import GENERATION_CONFIG_FILE, save_sampling_defaults

        await admin_only(interaction)
        model = self.bot.engine.ready_model()
        if model.checkpoint is None:
            raise CloneusError("the loaded model has no checkpoint directory to write defaults into")
        if not overwrite and (model.checkpoint / GENERATION_CONFIG_FILE).is_file():
            raise CloneusError(
                f"`{model.checkpoint / GENERATION_CONFIG_FILE}` exists; add overwrite:true to replace its defaults"
            )
        values = await request_sampling(self.bot.store, interaction.channel_id)
        options = model.sampling_defaults.merged(**values)
        file = await asyncio.to_thread(save_sampling_defaults, model.checkpoint, options, overwrite=overwrite)
        await interaction.response.send_message(
            f"Wrote this channel's options as the defaults of `{file}` (used from the next load of the checkpoint)."
        )

    @app_commands.command(name="load")
    @app_commands.check(channel_moderator)
    @app_commands.describe(name="A profile saved with /sampling save")
    @app_commands.autocomplete(name=_profile_autocomplete)
    async def load(self, interaction: discord.Interaction, name: str) -> None:
        """Use a saved profile in this channel (replaces its preset and options)."""
        profile = await self.bot.store.get_profile(interaction.guild_id, name)
        if profile is None:
            known = ", ".join(await self.bot.store.list_profiles(interaction.guild_id)) or "none saved yet"
            raise CloneusError(f"no profile {name!r} in this server; profiles: {known}")
        validate_sampling(profile.get("sampling") or {})
        for key in ("preset", "sampling"):
            await self.bot.store.set_channel_setting(interaction.channel_id, key, profile.get(key))
        await interaction.response.send_message(f"Loaded profile `{name}` here: {describe_profile(profile)}.")

    @app_commands.command(name="profiles")
    async def profiles(self, interaction: discord.Interaction) -> None:
        """The sampling profiles saved in this server."""
        profiles = await self.bot.store.list_profiles(interaction.guild_id or 0)
        lines = [f"`{n}`: {describe_profile(p)}" for n, p in profiles.items()] or ["none yet; /sampling save name:…"]
        await interaction.response.send_message("\n".join(lines)[:2000], ephemeral=True)

    @app_commands.command(name="reset")
    @app_commands.check(channel_moderator)
    async def reset(self, interaction: discord.Interaction) -> None:
        """Forget this channel's preset, overrides, auto-reply, webhook settings and word rules."""
        await self.bot.store.reset_channel_settings(interaction.channel_id)
        await self.bot.store.clear_word_rules(interaction.channel_id)
        await interaction.response.send_message("Sampling settings of this channel reset to the model defaults.")


async def setup(bot: CloneusBot) -> None:
    await bot.add_cog(SamplingCog(bot))
