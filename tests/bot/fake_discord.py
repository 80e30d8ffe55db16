"""A fake Discord for end-to-end bot tests: enough REST v10 and gateway for the unmodified discord.py client.

It is an aiohttp server on 127.0.0.1. The test points discord.py at it with two patches (see `tests/bot/conftest.py`):
`discord.http.Route.BASE` (REST, and the webhook routes interactions use for follow-ups and edits) and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`. Everything else in discord.py runs as shipped, so a test that
passes here exercises the same HTTP requests, rate-limit handling, reconnects and payload parsing as production.

What it models:
- one guild with text channels, members (and the bot's own member), roles, custom emoji;
- messages (JSON and multipart with attachments), edits, deletes, history pagination, reactions, typing;
- channel webhooks (create, list, execute with a username and avatar, edit their messages);
- application commands (bulk overwrite per guild), interactions (callback, `@original`, follow-ups);
- the gateway: HELLO, heartbeat ACK, IDENTIFY → READY + GUILD_CREATE, RESUME (replays missed events),
  REQUEST_GUILD_MEMBERS → GUILD_MEMBERS_CHUNK, server-side disconnects and op 7 RECONNECT.

Every REST request is recorded in `calls` (method, path, query, JSON body, files, status, time). `inject` makes the
next matching requests fail with 429 (with the `retry_after` JSON and headers discord.py honours) or 5xx.
A message's `pings` field says whom Discord would notify, computed from its content and `allowed_mentions`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from tests.bot.fake_routes import ROUTES

DISCORD_EPOCH_MS = 1420070400000
HEARTBEAT_INTERVAL_MS = 41250
EPHEMERAL = 1 << 6
LOADING = 1 << 7
MEMBER_PERMS = 0x0000_0000_0006_4C40  # view channel, send messages, read history, add reactions, embed, attach
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content
ADMIN_PERMS = MEMBER_PERMS | 0x20 | 0x2000_0000 | 0x8  # + manage guild, manage webhooks, administrator


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when the content type is exactly "application/json" (no charset).
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Call:
    """One REST request as the bot sent it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[dict[str, Any]]
    status: int
    t: float = field(default_factory=time.monotonic)


@dataclass
class Injection:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    retry_after: float


class InteractionRecord:
    """What the bot answered to one interaction: callbacks, the original response, follow-ups, edits."""

    def __init__(self, fake: FakeDiscord, payload: dict[str, Any]):
        self.fake = fake
        self.payload = payload
        self.id = int(payload["id"])
        self.token = payload["token"]
        self.callbacks: list[dict[str, Any]] = []
        self.original_id: int | None = None
        self.followup_ids: list[int] = []

    @property
    def original(self) -> dict[str, Any] | None:
        return self.fake.messages.get(self.original_id) if self.original_id else None

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.fake.messages[m] for m in self.followup_ids if m in self.fake.messages]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The original response (if any) then the follow-ups, current versions."""
        return ([self.original] if self.original else []) + self.followups

    @property
    def text(self) -> str:
        """All message contents of the answer joined by newlines (for assertions on what a user sees)."""
        return "\n".join(m["content"] for m in self.messages)

    @property
    def ephemeral(self) -> bool:
        return bool(self.messages) and all(m["flags"] & EPHEMERAL for m in self.messages)

    async def response(self, timeout: float = 10) -> dict[str, Any]:
        """The first callback body (`{"type": ..., "data": ...}`), waiting for it."""
        await self.fake.wait_for(lambda: self.callbacks, timeout, f"no response to interaction {self.id}")
        return self.callbacks[0]

    async def done(self, predicate: Callable[[InteractionRecord], Any], timeout: float = 30) -> InteractionRecord:
        """Wait until `predicate(self)` is truthy."""
        await self.fake.wait_for(lambda: predicate(self), timeout, f"interaction {self.id} never satisfied predicate")
        return self

    async def answered(self, timeout: float = 30) -> InteractionRecord:
        """Wait for a visible answer: a message with content or embeds that is not a loading placeholder."""
        return await self.done(
            lambda r: any(
                (m["content"] or m["embeds"] or m["attachments"]) and not m["flags"] & LOADING for m in r.messages
            ),
            timeout,
        )

    def edits(self, message_id: int | None = None) -> list[str]:
        """Every content the message had, first to last (defaults to the original response)."""
        return list(self.fake.history[message_id or self.original_id])


class FakeDiscord:
    """The server state and the aiohttp app. `await start()` then use `rest_base` / `gateway_url`."""

    def __init__(self, guild_name: str = "Test Guild"):
        self._ids = itertools.count(1)
        self.app_id = self.snowflake()
        self.bot_user = self._user(self.app_id, "CloneusBot", bot=True)
        self.guild_id = self.snowflake()
        self.guild_name = guild_name
        self.roles: dict[int, dict[str, Any]] = {}
        self.add_role(self.guild_id, "@everyone", MEMBER_PERMS)
        self.channels: dict[int, dict[str, Any]] = {}
        self.thread_members: dict[int, set[int]] = {}  # thread id -> user ids who joined
        self.members: dict[int, dict[str, Any]] = {}
        self.emojis: dict[int, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.history: dict[int, list[str]] = {}  # message id -> every content it had
        self.files: dict[int, bytes] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.calls: list[Call] = []
        self.injections: list[Injection] = []
        self.identify_count = 0
        self.resume_count = 0
        self.intents: int | None = None
        self.privileged_intents_enabled = True  # False: IDENTIFY asking for a privileged intent is refused (4014)
        self._events: list[dict[str, Any]] = []  # every dispatched event, for RESUME replay
        self._ws: web.WebSocketResponse | None = None
        self._session_id = "fake-session"
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        bot_role = self.add_role(self.snowflake(), "Bot", ADMIN_PERMS)
        self.members[self.app_id] = self._member(self.bot_user, None, [bot_role["id"]])

    # -- ids, users, state helpers -------------------------------------------------------------------------------

    def snowflake(self, at: datetime | None = None) -> int:
        """A new id whose timestamp part is now (or `at`), so discord.py's `created_at` is meaningful."""
        ms = int((at.timestamp() if at else time.time()) * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._ids) & 0x3FFFFF)

    @staticmethod
    def _user(uid: int, name: str, *, bot: bool = False, global_name: str | None = None) -> dict[str, Any]:
        return {"id": str(uid), "username": name, "discriminator": "0", "global_name": global_name, "avatar": None,
                "bot": bot}  # fmt: skip

    @staticmethod
    def _member(user: dict[str, Any], nick: str | None, roles: list[str]) -> dict[str, Any]:
        return {"user": user, "nick": nick, "roles": roles, "joined_at": "2024-01-01T00:00:00+00:00", "flags": 0,
                "deaf": False, "mute": False, "pending": False, "avatar": None}  # fmt: skip

    def add_role(self, rid: int, name: str, permissions: int) -> dict[str, Any]:
        role = {"id": str(rid), "name": name, "permissions": str(permissions), "position": len(self.roles),
                "color": 0, "hoist": False, "managed": False, "mentionable": True, "flags": 0}  # fmt: skip
        self.roles[rid] = role
        return role

    def add_channel(self, name: str) -> int:
        cid = self.snowflake()
        self.channels[cid] = {"id": str(cid), "type": 0, "guild_id": str(self.guild_id), "name": name,
                              "position": len(self.channels), "permission_overwrites": [], "nsfw": False,
                              "parent_id": None, "topic": None, "rate_limit_per_user": 0,
                              "last_message_id": None}  # fmt: skip
        self.dispatch("CHANNEL_CREATE", self.channels[cid])
        return cid

    def add_thread(self, parent_id: int, name: str, starter_id: int | None = None, owner: str | None = None) -> int:
        """A public thread in `parent_id` (from the message `starter_id`, whose id the thread then takes, as on
        Discord); dispatches THREAD_CREATE. Joins by the bot are recorded in `thread_members`."""
        tid = starter_id or self.snowflake()
        owner_id = next((uid for uid, m in self.members.items() if m["user"]["username"] == owner), self.app_id)
        self.channels[tid] = {"id": str(tid), "type": 11, "guild_id": str(self.guild_id), "name": name,
                              "parent_id": str(parent_id), "owner_id": str(owner_id), "last_message_id": None,
                              "rate_limit_per_user": 0, "message_count": 0, "member_count": 1, "flags": 0,
                              "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                                  "archive_timestamp": _now_iso(), "locked": False}}  # fmt: skip
        self.thread_members.setdefault(tid, set())
        self.dispatch("THREAD_CREATE", {**self.channels[tid], "newly_created": True})
        return tid

    def add_member(self, name: str, *, nick: str | None = None, roles: tuple[int, ...] = (), bot=False) -> int:
        uid = self.snowflake()
        self.members[uid] = self._member(self._user(uid, name, bot=bot), nick, [str(r) for r in roles])
        self.dispatch("GUILD_MEMBER_ADD", {**self.members[uid], "guild_id": str(self.guild_id)})
        return uid

    def add_emoji(self, name: str) -> int:
        eid = self.snowflake()
        self.emojis[eid] = {"id": str(eid), "name": name, "roles": [], "require_colons": True, "managed": False,
                            "animated": False, "available": True}  # fmt: skip
        self.dispatch("GUILD_EMOJIS_UPDATE", {"guild_id": str(self.guild_id), "emojis": list(self.emojis.values())})
        return eid

    def member_perms(self, uid: int) -> int:
        perms = int(self.roles[self.guild_id]["permissions"])
        for rid in self.members[uid]["roles"]:
            perms |= int(self.roles[int(rid)]["permissions"])
        return perms

    def guild_payload(self) -> dict[str, Any]:
        return {"id": str(self.guild_id), "name": self.guild_name, "icon": None, "owner_id": str(self.app_id),
                "roles": list(self.roles.values()), "emojis": list(self.emojis.values()), "stickers": [],
                "features": [], "channels": [c for c in self.channels.values() if c["type"] != 11],
                "members": list(self.members.values()),
                "member_count": len(self.members), "large": False,
                "threads": [c for c in self.channels.values() if c["type"] == 11], "voice_states": [],
                "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
                "premium_tier": 0, "preferred_locale": "en-US", "verification_level": 0, "mfa_level": 0,
                "default_message_notifications": 0, "explicit_content_filter": 0, "system_channel_flags": 0,
                "nsfw_level": 0, "unavailable": False, "joined_at": "2024-01-01T00:00:00+00:00"}  # fmt: skip

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10, message: str = "") -> Any:
        """Wait until `predicate()` is truthy (re-checked after every state change) and return its value."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(message or "fake Discord: condition not met in time")
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))
            except asyncio.TimeoutError:
                pass

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Messages currently in the channel (not ephemeral, not deleted), oldest first."""
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id and not m["flags"] & EPHEMERAL]

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        rx = re.compile(pattern)
        return [c for c in self.calls if c.method == method and rx.search(c.path)]

    def inject(self, method: str, path_regex: str, status: int, times: int = 1, retry_after: float = 0.2) -> None:
        """Fail the next `times` requests matching `method` and `path_regex` (searched in the path after /api/v10)
        with `status`: 429 carries `retry_after` as Discord sends it; 5xx a plain error body.
        """
        self.injections.append(Injection(method.upper(), re.compile(path_regex), status, times, retry_after))

    # -- messages ------------------------------------------------------------------------------------------------

    def _pings(self, content: str, allowed: dict[str, Any] | None, author_id: int) -> dict[str, Any]:
        """Whom Discord would notify: mentions in the content filtered by `allowed_mentions` (default: all)."""
        parse = set(allowed.get("parse", [])) if allowed is not None else {"users", "roles", "everyone"}
        users = {int(u) for u in (allowed or {}).get("users", [])}
        roles = {int(r) for r in (allowed or {}).get("roles", [])}
        mentioned = {int(u) for u in re.findall(r"<@!?(\d+)>", content)}
        mentioned_roles = {int(r) for r in re.findall(r"<@&(\d+)>", content)}
        return {
            "users": sorted(u for u in mentioned if (u in users or "users" in parse) and u != author_id),
            "roles": sorted(r for r in mentioned_roles if r in roles or "roles" in parse),
            "everyone": bool(re.search(r"@(everyone|here)", content)) and "everyone" in parse,
        }

    def create_message(
        self,
        channel_id: int,
        author: dict[str, Any],
        body: dict[str, Any],
        attachments: list[dict[str, Any]] = (),
        *,
        extra: dict[str, Any] | None = None,
        dispatch: bool = True,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        mid = self.snowflake(at)
        stamp = at.isoformat() if at else _now_iso()
        content = body.get("content") or ""
        pings = self._pings(content, body.get("allowed_mentions"), int(author["id"]))
        msg = {"id": str(mid), "channel_id": str(channel_id), "guild_id": str(self.guild_id), "author": author,
               "content": content, "timestamp": stamp, "edited_timestamp": None, "tts": False,
               "mention_everyone": pings["everyone"], "mentions": [self.members[u]["user"] for u in pings["users"]
                                                                   if u in self.members],
               "mention_roles": [str(r) for r in pings["roles"]], "attachments": list(attachments),
               "embeds": body.get("embeds") or [], "pinned": False, "type": 0, "flags": body.get("flags") or 0,
               "components": body.get("components") or [], "reactions": [], "pings": pings,
               "allowed_mentions": body.get("allowed_mentions"), **(extra or {})}  # fmt: skip
        if "message_reference" in body:
            msg["message_reference"] = body["message_reference"]
        self.messages[mid] = msg
        self.history[mid] = [content]
        if channel_id in self.channels:
            self.channels[channel_id]["last_message_id"] = str(mid)
        if dispatch and not msg["flags"] & EPHEMERAL:
            event = dict(msg)
            if int(author["id"]) in self.members:
                event["member"] = {k: v for k, v in self.members[int(author["id"])].items() if k != "user"}
            self.dispatch("MESSAGE_CREATE", event)
        self._touch()
        return msg

    def edit_message(self, mid: int, body: dict[str, Any], attachments: list[dict[str, Any]] | None) -> dict:
        msg = self.messages[mid]
        if "allowed_mentions" in body:
            msg["allowed_mentions"] = body["allowed_mentions"]
        if "content" in body:
            msg["content"] = body["content"] or ""
            pings = self._pings(msg["content"], msg["allowed_mentions"],
                                int(msg["author"]["id"]))  # fmt: skip
            msg["pings"] = pings
            msg["mention_everyone"] = pings["everyone"]
        if "embeds" in body:
            msg["embeds"] = body["embeds"] or []
        if "components" in body:
            msg["components"] = body["components"] or []
        if attachments is not None:
            msg["attachments"] = attachments
        msg["flags"] &= ~LOADING
        msg["edited_timestamp"] = _now_iso()
        self.history[mid].append(msg["content"])
        if not msg["flags"] & EPHEMERAL:
            self.dispatch("MESSAGE_UPDATE", dict(msg))
        self._touch()
        return msg

    def delete_message(self, mid: int) -> None:
        msg = self.messages.pop(mid)
        if not msg["flags"] & EPHEMERAL:
            self.dispatch("MESSAGE_DELETE", {"id": str(mid), "channel_id": msg["channel_id"],
                                             "guild_id": str(self.guild_id)})  # fmt: skip
        self._touch()

    # -- gateway -------------------------------------------------------------------------------------------------

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Queue a DISPATCH event; sent now if the bot is connected, else replayed on RESUME (events queued
        before the first IDENTIFY are dropped: READY and GUILD_CREATE carry the whole state).
        """
        payload = {"op": 0, "t": event, "s": len(self._events) + 1, "d": data}
        self._events.append(payload)
        if self._ws is not None and not self._ws.closed:
            asyncio.get_running_loop().create_task(self._send(self._ws, payload))

    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        if not ws.closed:
            await ws.send_str(json.dumps(payload))

    async def disconnect_gateway(self, code: int = 1000) -> None:
        """Close the bot's gateway socket from the server side; discord.py reconnects and RESUMEs."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close(code=code)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session."""
        if self._ws is not None:
            await self._send(self._ws, {"op": 7, "d": None})

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            op = data.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                await self._identify(ws, data["d"])
            elif op == 6:
                await self._resume(ws, data["d"])
            elif op == 8:
                chunk = {"guild_id": str(self.guild_id), "members": list(self.members.values()), "chunk_index": 0,
                         "chunk_count": 1, "nonce": data["d"].get("nonce")}  # fmt: skip
                self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
        if self._ws is ws:
            self._ws = None
        self._touch()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identify_count += 1
        self.intents = data.get("intents")
        if not self.privileged_intents_enabled and (self.intents or 0) & PRIVILEGED_INTENTS:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self._session_id = f"fake-session-{self.identify_count}"
        self._events = []
        ready = {"v": 10, "user": self.bot_user, "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                 "session_id": self._session_id, "resume_gateway_url": f"ws://127.0.0.1:{self.port}/",
                 "application": {"id": str(self.app_id), "flags": 0}, "private_channels": [],
                 "relationships": []}  # fmt: skip
        self.dispatch("READY", ready)
        self.dispatch("GUILD_CREATE", self.guild_payload())
        self._touch()

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("session_id") != self._session_id:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        self.resume_count += 1
        for payload in self._events[data.get("seq") or 0 :]:
            await self._send(ws, payload)
        self.dispatch("RESUMED", {})
        self._touch()

    # -- server --------------------------------------------------------------------------------------------------

    @property
    def rest_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{aid}/{name}", self._attachment)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _attachment(self, request: web.Request) -> web.Response:
        data = self.files.get(int(request.match_info["aid"]))
        return web.Response(body=data) if data is not None else _json({"message": "404: Not Found"}, 404)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[dict[str, Any]]]:
        """JSON body, or a multipart form's `payload_json` plus its files."""
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            body = json.loads(form.get("payload_json", "{}"))
            files = []
            for name, value in form.items():
                if name.startswith("files[") and isinstance(value, web.FileField):
                    files.append({"index": int(name[6:-1]), "filename": value.filename, "content": value.file.read(),
                                  "content_type": value.content_type})  # fmt: skip
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + unquote(request.match_info["tail"])
        body, files = await self._read_body(request)
        call = Call(request.method, path, dict(request.query), body, files, 200)
        self.calls.append(call)
        for inj in self.injections:
            if inj.times > 0 and inj.method == request.method and inj.pattern.search(path):
                inj.times -= 1
                call.status = inj.status
                self._touch()
                if inj.status == 429:
                    headers = {"Via": "1.1 google", "Retry-After": str(inj.retry_after), "X-RateLimit-Limit": "5",
                               "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": str(inj.retry_after),
                               "X-RateLimit-Scope": "user"}  # fmt: skip
                    return _json({"message": "You are being rate limited.", "retry_after": inj.retry_after,
                                  "global": False}, 429, headers)  # fmt: skip
                return _json({"message": f"{inj.status}: injected", "code": 0}, inj.status)
        for method, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                try:
                    status, data = handler(self, body, files, dict(request.query), *match.groups())
                except KeyError as e:
                    status, data = 404, {"message": f"404: Unknown {e}", "code": 10003}
                call.status = status
                self._touch()
                if status == 204:
                    return web.Response(status=204)
                return _json(data, status)
        call.status = 404
        self._touch()
        return _json({"message": f"404: no fake route for {request.method} {path}", "code": 0}, 404)
