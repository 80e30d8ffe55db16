"""The REST routes of the fake Discord (`tests/bot/fake_discord.py`), one small handler per route.

Each handler is `handler(fake, body, files, query, *path_groups) -> (status, json)`; a `KeyError` (unknown id)
becomes a 404 like Discord's "Unknown ..." errors. Paths and payload fields follow discord.py 2.7's `http.py`
and `webhook/async_.py`, which are what the bot actually calls.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.bot.fake_discord import FakeDiscord

EPHEMERAL = 1 << 6
LOADING = 1 << 7
ID = r"(\d+)"


def _attachments(fake: FakeDiscord, body: dict[str, Any], files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn uploaded files into attachment payloads (content kept in `fake.files`, served by the fake)."""
    out = []
    for f in files:
        aid = fake.snowflake()
        fake.files[aid] = f["content"]
        out.append({"id": str(aid), "filename": f["filename"], "size": len(f["content"]),
                    "url": f"http://127.0.0.1:{fake.port}/attachments/{aid}/{f['filename']}",
                    "proxy_url": f"http://127.0.0.1:{fake.port}/attachments/{aid}/{f['filename']}",
                    "content_type": f["content_type"]})  # fmt: skip
    kept = [a for a in (body or {}).get("attachments", []) if "id" in a and int(a["id"]) in fake.files]
    return out + kept


# -- identity ----------------------------------------------------------------------------------------------------


def users_me(fake, body, files, query):
    return 200, fake.bot_user


def application_me(fake, body, files, query):
    return 200, {"id": str(fake.app_id), "name": "CloneusBot", "description": "", "icon": None,
                 "bot_public": False, "bot_require_code_grant": False, "owner": fake.bot_user, "team": None,
                 "verify_key": "0" * 64, "flags": 0, "interactions_endpoint_url": None, "rpc_origins": [],
                 "summary": ""}  # fmt: skip


def gateway(fake, body, files, query):
    return 200, {"url": fake.gateway_url.rstrip("/"), "shards": 1,
                 "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0,
                                         "max_concurrency": 1}}  # fmt: skip


# -- application commands ----------------------------------------------------------------------------------------


def _command_payload(fake, cmd: dict[str, Any], guild_id: str | None, index: int) -> dict[str, Any]:
    return {"type": 1, "description": "", "options": [], "default_member_permissions": None, "dm_permission": True,
            "nsfw": False, **cmd, "id": str(fake.app_id + 1000 + index), "application_id": str(fake.app_id),
            "guild_id": guild_id, "version": "1"}  # fmt: skip


def put_commands(fake, body, files, query, app_id, guild_id=None):
    fake.commands[int(guild_id) if guild_id else None] = [
        _command_payload(fake, c, guild_id, i) for i, c in enumerate(body)
    ]
    return 200, fake.commands[int(guild_id) if guild_id else None]


def get_commands(fake, body, files, query, app_id, guild_id=None):
    return 200, fake.commands.get(int(guild_id) if guild_id else None, [])


# -- interactions ------------------------------------------------------------------------------------------------


def _interaction_message(fake, rec, data: dict[str, Any], files, *, loading=False, followup=False) -> dict:
    flags = (data.get("flags") or 0) | (LOADING if loading else 0)
    extra = {"webhook_id": str(fake.app_id), "application_id": str(fake.app_id), "type": 0 if followup else 20,
             "interaction_metadata": {"id": str(rec.id), "type": rec.payload["type"],
                                      "user": rec.payload["member"]["user"],
                                      "authorizing_integration_owners": {}}}  # fmt: skip
    channel_id = int(rec.payload["channel_id"])
    return fake.create_message(
        channel_id, fake.bot_user, {**data, "flags": flags}, _attachments(fake, data, files), extra=extra
    )


def interaction_callback(fake, body, files, query, interaction_id, token):
    rec = fake.interactions[token]
    if rec.callbacks:
        return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
    rec.callbacks.append(body)
    kind, data = body["type"], body.get("data") or {}
    message = None
    if kind == 4:  # CHANNEL_MESSAGE_WITH_SOURCE
        message = _interaction_message(fake, rec, data, files)
    elif kind == 5:  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: a "thinking..." placeholder
        message = _interaction_message(fake, rec, {"content": "", "flags": data.get("flags")}, files, loading=True)
    elif kind == 7 and rec.payload.get("message"):  # UPDATE_MESSAGE
        message = fake.edit_message(int(rec.payload["message"]["id"]), data, None)
    if message is not None and kind in (4, 5):
        rec.original_id = int(message["id"])
    result = {"interaction": {"id": str(rec.id), "type": rec.payload["type"],
                              "response_message_id": message["id"] if message else None,
                              "response_message_loading": kind == 5,
                              "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL)}}  # fmt: skip
    if message is not None:
        result["resource"] = {"type": kind, "message": message}
    return 200, result


def _record_for(fake, app_id: str, token: str):
    if int(app_id) != fake.app_id:
        raise KeyError("Webhook")
    return fake.interactions[token]


def _webhook_message_id(fake, rec, message_id: str) -> int:
    mid = rec.original_id if message_id == "@original" else int(message_id)
    if mid is None or mid not in fake.messages:
        raise KeyError("Message")
    return mid


def execute_webhook(fake, body, files, query, webhook_id, token):
    if int(webhook_id) == fake.app_id:  # an interaction follow-up
        rec = fake.interactions[token]
        original = rec.original
        if original is not None and original["flags"] & LOADING and len(fake.history[rec.original_id]) == 1:
            # Discord turns the first follow-up after a deferral into the deferred response itself.
            return 200, fake.edit_message(rec.original_id, body, _attachments(fake, body, files))
        msg = _interaction_message(fake, rec, body, files, followup=True)
        rec.followup_ids.append(int(msg["id"]))
        return 200, msg
    hook = fake.webhooks[int(webhook_id)]
    if hook["token"] != token:
        raise KeyError("Webhook")
    author = {"id": str(hook["id"]), "username": body.get("username") or hook["name"], "discriminator": "0000",
              "avatar": None, "bot": True, "avatar_url": body.get("avatar_url")}  # fmt: skip
    msg = fake.create_message(int(hook["channel_id"]), author, body, _attachments(fake, body, files),
                              extra={"webhook_id": str(hook["id"])})  # fmt: skip
    return (200, msg) if query.get("wait") in ("1", "true", "True") else (204, None)


def get_webhook_message(fake, body, files, query, webhook_id, token, message_id):
    if int(webhook_id) == fake.app_id:
        return 200, fake.messages[_webhook_message_id(fake, _record_for(fake, webhook_id, token), message_id)]
    return 200, fake.messages[int(message_id)]


def edit_webhook_message(fake, body, files, query, webhook_id, token, message_id):
    if int(webhook_id) == fake.app_id:
        mid = _webhook_message_id(fake, _record_for(fake, webhook_id, token), message_id)
    else:
        mid = int(message_id)
        if fake.messages[mid].get("webhook_id") != webhook_id or fake.webhooks[int(webhook_id)]["token"] != token:
            raise KeyError("Message")
    attachments = _attachments(fake, body, files) if files or "attachments" in body else None
    return 200, fake.edit_message(mid, body, attachments)


def delete_webhook_message(fake, body, files, query, webhook_id, token, message_id):
    if int(webhook_id) == fake.app_id:
        mid = _webhook_message_id(fake, _record_for(fake, webhook_id, token), message_id)
    else:
        mid = int(message_id)
    fake.delete_message(mid)
    return 204, None


def create_channel_webhook(fake, body, files, query, channel_id):
    hid = fake.snowflake()
    fake.webhooks[hid] = {"id": str(hid), "type": 1, "guild_id": str(fake.guild_id), "channel_id": channel_id,
                          "name": body.get("name") or "hook", "avatar": None, "token": f"hooktoken{hid}",
                          "application_id": str(fake.app_id), "user": fake.bot_user}  # fmt: skip
    return 200, fake.webhooks[hid]


def list_channel_webhooks(fake, body, files, query, channel_id):
    return 200, [h for h in fake.webhooks.values() if h["channel_id"] == channel_id]


def list_guild_webhooks(fake, body, files, query, guild_id):
    return 200, list(fake.webhooks.values())


# -- channels and messages ---------------------------------------------------------------------------------------


def get_channel(fake, body, files, query, channel_id):
    return 200, fake.channels[int(channel_id)]


def send_message(fake, body, files, query, channel_id):
    channel = fake.channels[int(channel_id)]
    return 200, fake.create_message(int(channel["id"]), fake.bot_user, body, _attachments(fake, body, files))


def _channel_message(fake, channel_id: str, message_id: str) -> int:
    mid = int(message_id)
    if fake.messages[mid]["channel_id"] != channel_id:
        raise KeyError("Message")
    return mid


def get_message(fake, body, files, query, channel_id, message_id):
    return 200, fake.messages[_channel_message(fake, channel_id, message_id)]


def edit_message(fake, body, files, query, channel_id, message_id):
    mid = _channel_message(fake, channel_id, message_id)
    if fake.messages[mid]["author"]["id"] != str(fake.app_id):
        return 403, {"message": "Cannot edit a message authored by another user", "code": 50005}
    attachments = _attachments(fake, body, files) if files or "attachments" in body else None
    return 200, fake.edit_message(mid, body, attachments)


def delete_message(fake, body, files, query, channel_id, message_id):
    fake.delete_message(_channel_message(fake, channel_id, message_id))
    return 204, None


def history(fake, body, files, query, channel_id):
    """GET /channels/{id}/messages: newest first, `limit` (max 100) around `before`/`after`, like Discord."""
    if int(channel_id) not in fake.channels:
        raise KeyError("Channel")
    msgs = sorted(fake.channel_messages(int(channel_id)), key=lambda m: int(m["id"]))
    limit = min(int(query.get("limit", 50)), 100)
    if "after" in query:
        msgs = [m for m in msgs if int(m["id"]) > int(query["after"])][:limit]
    elif "before" in query:
        msgs = [m for m in msgs if int(m["id"]) < int(query["before"])][-limit:]
    elif "around" in query:
        idx = next((i for i, m in enumerate(msgs) if int(m["id"]) >= int(query["around"])), len(msgs))
        msgs = msgs[max(0, idx - limit // 2) : idx + (limit + 1) // 2]
    else:
        msgs = msgs[-limit:]
    return 200, list(reversed(msgs))


def add_own_reaction(fake, body, files, query, channel_id, message_id, emoji):
    msg = fake.messages[_channel_message(fake, channel_id, message_id)]
    msg["reactions"].append({"emoji": {"id": None, "name": emoji}, "count": 1, "me": True})
    return 204, None


def remove_reaction(fake, body, files, query, channel_id, message_id, emoji, user):
    msg = fake.messages[_channel_message(fake, channel_id, message_id)]
    msg["reactions"] = [r for r in msg["reactions"] if r["emoji"]["name"] != emoji]
    return 204, None


def join_thread(fake, body, files, query, channel_id):
    fake.thread_members[int(channel_id)].add(fake.app_id)
    return 204, None


def typing(fake, body, files, query, channel_id):
    return 204, None


# -- guild -------------------------------------------------------------------------------------------------------


def get_guild(fake, body, files, query, guild_id):
    return 200, fake.guild_payload()


def guild_channels(fake, body, files, query, guild_id):
    return 200, [c for c in fake.channels.values() if c["type"] != 11]


def guild_members(fake, body, files, query, guild_id):
    after = int(query.get("after", 0))
    members = sorted(fake.members.items())
    return 200, [m for uid, m in members if uid > after][: int(query.get("limit", 1))]


def guild_member(fake, body, files, query, guild_id, user_id):
    return 200, fake.members[int(user_id)]


def guild_roles(fake, body, files, query, guild_id):
    return 200, list(fake.roles.values())


def guild_emojis(fake, body, files, query, guild_id):
    return 200, list(fake.emojis.values())


def get_user(fake, body, files, query, user_id):
    return 200, fake.members[int(user_id)]["user"]


ROUTES = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", "/users/@me", users_me),
        ("GET", f"/users/{ID}", get_user),
        ("GET", "/oauth2/applications/@me", application_me),
        ("GET", "/applications/@me", application_me),
        ("GET", "/gateway", gateway),
        ("GET", "/gateway/bot", gateway),
        ("PUT", f"/applications/{ID}/commands", put_commands),
        ("GET", f"/applications/{ID}/commands", get_commands),
        ("PUT", f"/applications/{ID}/guilds/{ID}/commands", put_commands),
        ("GET", f"/applications/{ID}/guilds/{ID}/commands", get_commands),
        ("POST", f"/interactions/{ID}/([^/]+)/callback", interaction_callback),
        ("POST", f"/webhooks/{ID}/([^/]+)", execute_webhook),
        ("GET", f"/webhooks/{ID}/([^/]+)/messages/(@original|\\d+)", get_webhook_message),
        ("PATCH", f"/webhooks/{ID}/([^/]+)/messages/(@original|\\d+)", edit_webhook_message),
        ("DELETE", f"/webhooks/{ID}/([^/]+)/messages/(@original|\\d+)", delete_webhook_message),
        ("POST", f"/channels/{ID}/webhooks", create_channel_webhook),
        ("GET", f"/channels/{ID}/webhooks", list_channel_webhooks),
        ("GET", f"/guilds/{ID}/webhooks", list_guild_webhooks),
        ("GET", f"/channels/{ID}", get_channel),
        ("POST", f"/channels/{ID}/messages", send_message),
        ("GET", f"/channels/{ID}/messages", history),
        ("GET", f"/channels/{ID}/messages/{ID}", get_message),
        ("PATCH", f"/channels/{ID}/messages/{ID}", edit_message),
        ("DELETE", f"/channels/{ID}/messages/{ID}", delete_message),
        ("PUT", f"/channels/{ID}/messages/{ID}/reactions/([^/]+)/@me", add_own_reaction),
        ("DELETE", f"/channels/{ID}/messages/{ID}/reactions/([^/]+)/([^/]+)", remove_reaction),
        ("POST", f"/channels/{ID}/typing", typing),
        ("PUT", f"/channels/{ID}/thread-members/@me", join_thread),
        ("GET", f"/guilds/{ID}", get_guild),
        ("GET", f"/guilds/{ID}/channels", guild_channels),
        ("GET", f"/guilds/{ID}/members", guild_members),
        ("GET", f"/guilds/{ID}/members/{ID}", guild_member),
        ("GET", f"/guilds/{ID}/roles", guild_roles),
        ("GET", f"/guilds/{ID}/emojis", guild_emojis),
    ]
]
