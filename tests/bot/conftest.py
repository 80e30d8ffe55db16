"""End-to-end bot harness: the real bot (built by `run.open_bot`, as in production) against a fake Discord.

Fixtures:
- `fake_discord`: a started `FakeDiscord` (see fake_discord.py) with discord.py pointed at it. Its guild has the
  channels `general` (the configured channel) and `random`, and the members alice, bob, carol (plain members)
  and boss (holds the "Admins" role, which has Manage Server). Ids: `fake.channel_ids["general"]`,
  `fake.user_ids["alice"]`, `fake.role_ids["Admins"]`.
- `tiny_checkpoint`: a checkpoint of the tiny random model (LoRA adapter, tokenizer, cloneus_config.yaml,
  users.json with alice, bob, carol) that `Cloneus.from_pretrained` loads in about a second.
- `bot_settings`: `Settings` for a bot whose files all live in `tmp_path`; `models.json` registers the tiny
  checkpoint as `tiny` (the default). Override fields with `bot_settings.model_copy(update={...})`.
- `start_bot`: `async with start_bot(settings=None, extensions=EXTENSIONS) as drv:` starts the bot, waits until
  it is ready (commands synced, context seeded) and yields a `Driver`; leaving the block shuts it down
  cleanly. A test can start it twice in a row on the same files (a restart).
- `drv`: the full bot (all cogs) already started, with the default model loaded.

Driver (all coroutines; `user` is a member name or id, `channel` a channel name or id, default general):
- `rec = await drv.slash("clone speak", author="alice", user="bob", perms=None)` sends an INTERACTION_CREATE
  with options typed from the synced command schema and returns an `InteractionRecord`:
  `await rec.response()` (the callback body), `await rec.answered()` (waits for visible content),
  `rec.original` / `rec.followups` / `rec.messages` / `rec.text` / `rec.ephemeral`, `rec.edits()` (every version
  of the original), `await rec.done(lambda r: ...)`.
- `await drv.autocomplete("clone speak", "author", "al")` → the choices list.
- `await drv.context_menu("Regenerate", message_id, user=...)` → `InteractionRecord`.
- `await drv.post_message("hi", user="alice")` (MESSAGE_CREATE) → the message dict; `await drv.react(message_id,
  "👍", user="bob")`; `await drv.click(message_id, "Next", user=...)` presses a button (by label or custom id;
  `values=[...]` picks in a select) → `InteractionRecord`.
- `await drv.wait_for(predicate, timeout)`; `drv.fake`, `drv.bot`, `drv.settings` for everything else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord
import pytest
import yaml
import yarl

from bot.client import EXTENSIONS
from bot.settings import Settings
from tests.bot.fake_discord import ADMIN_PERMS, FakeDiscord, InteractionRecord

TOKEN = "fake-bot-token"
AUTHORS = ("alice", "bob", "carol")
OPTION_TYPES = {3: str, 4: int, 5: bool, 10: float}


@pytest.fixture
async def fake_discord(monkeypatch) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    fake.channel_ids = {name: fake.add_channel(name) for name in ("general", "random")}
    admins = fake.snowflake()
    fake.add_role(admins, "Admins", ADMIN_PERMS)
    fake.role_ids = {"Admins": admins}
    fake.user_ids = {name: fake.add_member(name, nick=name.capitalize()) for name in AUTHORS}
    fake.user_ids["boss"] = fake.add_member("boss", roles=(admins,))
    await fake.start()
    monkeypatch.setattr(discord.http.Route, "BASE", fake.rest_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    yield fake
    await fake.close()


def write_tiny_checkpoint(tiny_model_dir: Path, out: Path, authors: tuple[str, ...] = AUTHORS) -> Path:
    """A loadable checkpoint of the tiny model: a fresh LoRA adapter, its tokenizer, config and user index."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cloneus.config import config_from_dict
    from cloneus.data.users import User, UserIndex
    from cloneus.io import atomic_write_text

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    config = config_from_dict({"model": {"model_id": str(tiny_model_dir)}})
    atomic_write_text(out / "cloneus_config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    users = [
        User(
            id=str(i + 1),
            username=name,
            display_name=name,
            first_name=None,
            is_bot=False,
            excluded=False,
            opted_out=False,
            message_count=10,
            share=1 / len(authors),
            included=True,
        )  # fmt: skip
        for i, name in enumerate(authors)
    ]
    UserIndex(users=users).save(out / "users.json")
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model_dir, tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("tiny-ckpt") / "checkpoint-1")


@pytest.fixture
def bot_settings(tmp_path, fake_discord, tiny_checkpoint) -> Settings:
    models_json = tmp_path / "config" / "models.json"
    models_json.parent.mkdir(parents=True)
    models_json.write_text(json.dumps({"default": "tiny", "models": [{"name": "tiny", "desc": "tiny random model",
                                                                      "ckpt": str(tiny_checkpoint)}]}))  # fmt: skip
    return Settings(
        token=TOKEN,
        guild_ids=[fake_discord.guild_id],
        channel_id=fake_discord.channel_ids["general"],
        admin_role="Admins",
        db_path=tmp_path / "data" / "cloneus.db",
        models_json=models_json,
        clone_cooldown_s=0,
        config_path=tmp_path / "config" / "train_config.yaml",
        chat_dir=tmp_path / "data" / "chat",
        users_json=tmp_path / "config" / "users.json",
    )


class Driver:
    """Acts as Discord users against the running bot; see the module docstring."""

    def __init__(self, fake: FakeDiscord, bot, settings: Settings):
        self.fake = fake
        self.bot = bot
        self.settings = settings

    def user_id(self, user: str | int) -> int:
        return self.fake.user_ids[user] if isinstance(user, str) else user

    def channel_id(self, channel: str | int | None) -> int:
        if channel is None:
            return self.fake.channel_ids["general"]
        return self.fake.channel_ids[channel] if isinstance(channel, str) else channel

    async def wait_for(self, predicate, timeout: float = 10, message: str = "") -> Any:
        return await self.fake.wait_for(predicate, timeout, message)

    def _member_payload(self, uid: int, perms: int | None) -> dict[str, Any]:
        member = dict(self.fake.members[uid])
        member["permissions"] = str(self.fake.member_perms(uid) if perms is None else perms)
        return member

    def _base_payload(self, kind: int, data: dict[str, Any], user, channel, perms) -> dict[str, Any]:
        uid, cid = self.user_id(user), self.channel_id(channel)
        iid = self.fake.snowflake()
        return {"id": str(iid), "application_id": str(self.fake.app_id), "type": kind, "data": data,
                "guild_id": str(self.fake.guild_id), "channel_id": str(cid), "channel": self.fake.channels[cid],
                "member": self._member_payload(uid, perms), "token": f"itoken{iid}", "version": 1,
                "app_permissions": str(ADMIN_PERMS), "locale": "en-US", "guild_locale": "en-US",
                "entitlements": [], "authorizing_integration_owners": {"0": str(self.fake.guild_id)},
                "context": 0, "attachment_size_limit": 25 * 1024**2}  # fmt: skip

    async def _send(self, payload: dict[str, Any]) -> InteractionRecord:
        rec = InteractionRecord(self.fake, payload)
        self.fake.interactions[rec.token] = rec
        self.fake.dispatch("INTERACTION_CREATE", payload)
        return rec

    def _command(self, name: str, kind: int = 1) -> dict[str, Any]:
        for cmd in self.fake.commands.get(self.fake.guild_id, []):
            if cmd["name"] == name and cmd.get("type", 1) == kind:
                return cmd
        known = sorted(c["name"] for c in self.fake.commands.get(self.fake.guild_id, []))
        raise LookupError(f"no synced command {name!r} of type {kind}; synced: {known}")

    def _options(self, command: str, values: dict[str, Any], focused: str | None) -> tuple[dict, dict]:
        """The interaction `data` for `command` ("group sub" or "name") with typed options and `resolved`."""
        root, *subs = command.split()
        cmd = self._command(root)
        data = {"id": cmd["id"], "name": root, "type": 1, "guild_id": str(self.fake.guild_id)}
        schema, holder = cmd.get("options", []), data
        for sub in subs:
            option = next((o for o in schema if o["name"] == sub and o["type"] in (1, 2)), None)
            if option is None:
                raise LookupError(f"{command!r}: no subcommand {sub!r}")
            child = {"name": sub, "type": option["type"], "options": []}
            holder.setdefault("options", []).append(child)
            schema, holder = option.get("options", []), child
        resolved: dict[str, dict] = {}
        options = []
        for name, value in values.items():
            option = next((o for o in schema if o["name"] == name), None)
            if option is None:
                raise LookupError(f"{command!r} has no option {name!r}; options: {[o['name'] for o in schema]}")
            options.append(self._typed_option(option, value, resolved, focused == name))
        holder["options"] = options
        if resolved:
            data["resolved"] = resolved
        return data, resolved

    def _typed_option(self, option: dict, value: Any, resolved: dict, focused: bool) -> dict[str, Any]:
        kind = option["type"]
        out: dict[str, Any] = {"name": option["name"], "type": kind}
        if focused:
            out["focused"] = True
            out["value"] = str(value)
        elif kind in OPTION_TYPES:
            out["value"] = OPTION_TYPES[kind](value)
        elif kind in (6, 9):  # user / mentionable
            uid = self.user_id(value)
            member = {k: v for k, v in self._member_payload(uid, None).items() if k != "user"}
            resolved.setdefault("users", {})[str(uid)] = self.fake.members[uid]["user"]
            resolved.setdefault("members", {})[str(uid)] = member
            out["value"] = str(uid)
        elif kind == 7:  # channel
            cid = self.channel_id(value)
            resolved.setdefault("channels", {})[str(cid)] = {
                **self.fake.channels[cid],
                "permissions": str(ADMIN_PERMS),
            }
            out["value"] = str(cid)
        elif kind == 8:  # role
            rid = self.fake.role_ids[value] if isinstance(value, str) else value
            resolved.setdefault("roles", {})[str(rid)] = self.fake.roles[rid]
            out["value"] = str(rid)
        else:
            raise NotImplementedError(f"option type {kind} ({option['name']}) is not supported by the driver")
        return out

    async def slash(self, command: str, *, user: str | int = "alice", channel=None, perms: int | None = None,
                    **options) -> InteractionRecord:  # fmt: skip
        """Invoke a slash command as `user` (with `perms`, default: their roles' permissions)."""
        data, _ = self._options(command, options, None)
        return await self._send(self._base_payload(2, data, user, channel, perms))

    async def autocomplete(self, command: str, focused: str, value: str, *, user: str | int = "alice",
                           channel=None, **options) -> list[dict[str, Any]]:  # fmt: skip
        """The autocomplete choices the bot offers for option `focused` while `value` is typed."""
        data, _ = self._options(command, {**options, focused: value}, focused)
        rec = await self._send(self._base_payload(4, data, user, channel, None))
        response = await rec.response()
        assert response["type"] == 8, response
        return response["data"]["choices"]

    async def context_menu(self, name: str, message_id: int, *, user: str | int = "alice", channel=None,
                           perms: int | None = None) -> InteractionRecord:  # fmt: skip
        """Invoke a message context-menu command (e.g. "Regenerate") on `message_id`."""
        cmd = self._command(name, kind=3)
        message = self.fake.messages[int(message_id)]
        data = {"id": cmd["id"], "name": name, "type": 3, "target_id": str(message_id),
                "guild_id": str(self.fake.guild_id), "resolved": {"messages": {str(message_id): message}}}  # fmt: skip
        return await self._send(self._base_payload(2, data, user, channel or int(message["channel_id"]), perms))

    async def click(self, message_id: int, label: str, *, user: str | int = "alice",
                    values: list[str] | None = None) -> InteractionRecord:  # fmt: skip
        """Press the button labelled `label` (or with that custom id) on a message, or pick `values` in the select
        with that custom id (a component INTERACTION_CREATE)."""
        message = self.fake.messages[int(message_id)]
        components = [c for row in message["components"] for c in row.get("components", [])]
        component = next((c for c in components if label in (c.get("label"), c.get("custom_id"))), None)
        if component is None:
            known = [c.get("label") or c.get("custom_id") for c in components]
            raise LookupError(f"message {message_id} has no component {label!r}; has {known}")
        data = {"custom_id": component["custom_id"], "component_type": component["type"]}
        if values is not None:
            data["values"] = values
        payload = self._base_payload(3, data, user, int(message["channel_id"]), None)
        return await self._send(payload | {"message": message})

    async def post_message(self, content: str, *, user: str | int = "alice", channel=None) -> dict[str, Any]:
        """A member posts a message (MESSAGE_CREATE)."""
        uid = self.user_id(user)
        return self.fake.create_message(self.channel_id(channel), self.fake.members[uid]["user"], {"content": content})

    async def react(self, message_id: int, emoji: str, *, user: str | int = "alice") -> None:
        """A member adds a reaction (MESSAGE_REACTION_ADD)."""
        uid = self.user_id(user)
        message = self.fake.messages[int(message_id)]
        member = self._member_payload(uid, None)
        self.fake.dispatch("MESSAGE_REACTION_ADD", {"user_id": str(uid), "channel_id": message["channel_id"],
                                                    "message_id": str(message_id), "guild_id": str(self.fake.guild_id),
                                                    "member": member, "emoji": {"id": None, "name": emoji},
                                                    "message_author_id": message["author"]["id"], "burst": False,
                                                    "type": 0})  # fmt: skip


@pytest.fixture
def start_bot(fake_discord, bot_settings):
    """Factory: `async with start_bot(settings=None, extensions=EXTENSIONS, loader=None) as drv: ...`."""
    from run import open_bot

    @asynccontextmanager
    async def start(
        settings: Settings | None = None, extensions: tuple[str, ...] = EXTENSIONS, loader=None, timeout=60
    ) -> AsyncIterator[Driver]:
        settings = settings or bot_settings
        async with open_bot(settings, extensions=extensions, loader=loader) as bot:
            bot._connection.guild_ready_timeout = 0.05
            runner = asyncio.create_task(bot.start(settings.token.get_secret_value()))
            ready = asyncio.create_task(bot.wait_until_ready())
            await asyncio.wait({runner, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()
            assert ready.done(), "the bot did not become ready"
            try:
                yield Driver(fake_discord, bot, settings)
            finally:
                await bot.close()
                await asyncio.wait_for(runner, 30)

    return start


@pytest.fixture
async def drv(start_bot) -> AsyncIterator[Driver]:
    """The full bot with every cog, its default (tiny) model loaded."""
    async with start_bot() as driver:
        await driver.wait_for(lambda: driver.bot.engine.status().loaded, timeout=60, message="model never loaded")
        yield driver
