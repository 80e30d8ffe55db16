"""The bot's durable state in one SQLite file (aiosqlite).

Tables: per-channel context (recent messages, clone replies stored under the cloned author), per-channel
settings (sampling defaults, auto-reply, webhook), training jobs, consent (opt-outs), clone replies and their
feedback, cron schedules. The YouTube cache lives in the same file in `youtube_*` tables that
`cloneus.plugins.youtube` owns; nothing here touches them.

Durability: the database runs in WAL mode with `synchronous=FULL`. Every write method is one transaction
(`BEGIN IMMEDIATE` ... `COMMIT`), so a bot killed at any instant leaves either the whole write or none of it, and
a write that returned has been fsynced: with FULL the WAL is synced at every commit, so even a power cut loses
nothing that was acknowledged (NORMAL would only survive a process kill). Bot writes are a few per message, so
the extra fsync costs nothing noticeable.

The schema is versioned: `schema_version` holds the number of `MIGRATIONS` applied, and `Store.open` applies
the missing ones in order, each in its own transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite

logger = logging.getLogger(__name__)

CONTEXT_KEEP_PER_CHANNEL = 1000  # rows kept per channel; ctx_limit reads far fewer, the rest is for regenerate
BUSY_TIMEOUT_MS = 10_000  # the YouTube cache writes to the same file from another connection

MIGRATIONS: list[str] = [
    """
    CREATE TABLE context (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id INTEGER NOT NULL,
        message_id INTEGER,
        author TEXT NOT NULL,
        author_id INTEGER,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL,
        is_clone INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX context_message ON context(channel_id, message_id);
    CREATE INDEX context_channel ON context(channel_id, created_at, id);
    CREATE TABLE channel_settings (
        channel_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (channel_id, key)
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        status TEXT NOT NULL,
        name TEXT,
        config TEXT NOT NULL,
        run_dir TEXT,
        pid INTEGER,
        guild_id INTEGER,
        channel_id INTEGER,
        message_id INTEGER,
        progress TEXT,
        checkpoint TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE consent (
        user_id INTEGER PRIMARY KEY,
        opted_out INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE replies (
        message_id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL,
        author TEXT NOT NULL,
        invoker_id INTEGER NOT NULL,
        request TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE feedback (
        message_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        value INTEGER NOT NULL,
        context TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (message_id, user_id)
    );
    CREATE TABLE schedules (
        guild_id INTEGER PRIMARY KEY,
        cron TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
]

JOB_FIELDS = frozenset(
    "status name config run_dir pid guild_id channel_id message_id progress checkpoint error finished_at".split()
)
JSON_JOB_FIELDS = frozenset({"config", "progress"})


@dataclass(frozen=True)
class ContextMessage:
    """One message of a channel's context. Clone replies carry the cloned author and `is_clone=True`."""

    channel_id: int
    message_id: int | None
    author: str
    text: str
    created_at: datetime
    is_clone: bool = False
    author_id: int | None = None


@dataclass(frozen=True)
class CloneReply:
    """A message the bot posted as a clone, with the request that produced it (for regenerate and feedback)."""

    message_id: int
    channel_id: int
    author: str
    invoker_id: int
    request: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Job:
    """A training job. `status` is one of running, done, failed, cancelled, interrupted, lost."""

    id: int
    status: str
    name: str | None
    config: dict[str, Any]
    run_dir: str | None
    pid: int | None
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    progress: dict[str, Any] | None
    checkpoint: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Schedule:
    guild_id: int
    cron: str


def _now() -> str:
    return _iso(datetime.now(timezone.utc))


def _iso(value: datetime | str) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    # A fixed-width form (always microseconds, always +00:00) so that text order is time order in SQL.
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class Store:
    """Async access to the bot database. Open with `await Store.open(path)` or `async with await Store.open(...)`.

    One connection is shared by the whole bot; an `asyncio.Lock` keeps one transaction at a time on it.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path):
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) the database at `path` and bring its schema up to date."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        store = cls(conn, path)
        try:
            await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; rolled back if the body raises (or the task is cancelled)."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            async with self._conn.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())

    async def _migrate(self) -> None:
        await self._conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        rows = await self._fetchall("SELECT version FROM schema_version")
        version = rows[0]["version"] if rows else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path} has schema version {version}, newer than this bot ({len(MIGRATIONS)})")
        for target in range(version + 1, len(MIGRATIONS) + 1):
            async with self._tx() as db:
                for statement in _statements(MIGRATIONS[target - 1]):
                    await db.execute(statement)
                await db.execute("DELETE FROM schema_version")
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            logger.info("%s: migrated schema to version %d", self.path, target)

    async def schema_version(self) -> int:
        rows = await self._fetchall("SELECT version FROM schema_version")
        return rows[0]["version"] if rows else 0

    # -- context -------------------------------------------------------------------------------------------------

    async def add_context(
        self,
        channel_id: int,
        message_id: int | None,
        author: str,
        text: str,
        created_at: datetime | str,
        is_clone: bool = False,
        *,
        author_id: int | None = None,
    ) -> None:
        """Append a message to the channel's context (a message id already stored is updated, not duplicated)."""
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO context (channel_id, message_id, author, author_id, text, created_at, is_clone)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(channel_id, message_id) DO UPDATE SET author=excluded.author, text=excluded.text,"
                " is_clone=excluded.is_clone",
                (channel_id, message_id, author, author_id, text, _iso(created_at), int(is_clone)),
            )
            await db.execute(
                "DELETE FROM context WHERE channel_id = ? AND id IN ("
                " SELECT id FROM context WHERE channel_id = ? ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?)",
                (channel_id, channel_id, CONTEXT_KEEP_PER_CHANNEL),
            )

    async def recent_context(self, channel_id: int, limit: int) -> list[ContextMessage]:
        """The last `limit` messages of the channel by time (ties in arrival order), oldest first."""
        rows = await self._fetchall(
            "SELECT * FROM (SELECT * FROM context WHERE channel_id = ? ORDER BY created_at DESC, id DESC LIMIT ?)"
            " ORDER BY created_at, id",
            (channel_id, limit),
        )
        return [
            ContextMessage(
                channel_id=r["channel_id"],
                message_id=r["message_id"],
                author=r["author"],
                text=r["text"],
                created_at=_dt(r["created_at"]),
                is_clone=bool(r["is_clone"]),
                author_id=r["author_id"],
            )
            for r in rows
        ]

    async def update_context_text(self, channel_id: int, message_id: int, text: str) -> None:
        """Replace the text of a stored message (an edit, or a regenerated clone reply)."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE context SET text = ? WHERE channel_id = ? AND message_id = ?", (text, channel_id, message_id)
            )

    async def delete_context_message(self, channel_id: int, message_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM context WHERE channel_id = ? AND message_id = ?", (channel_id, message_id))

    async def clear_context(self, channel_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM context WHERE channel_id = ?", (channel_id,))

    # -- per-channel settings ------------------------------------------------------------------------------------

    async def get_channel_settings(self, channel_id: int) -> dict[str, Any]:
        """Every setting stored for the channel (values are JSON-decoded)."""
        rows = await self._fetchall("SELECT key, value FROM channel_settings WHERE channel_id = ?", (channel_id,))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def set_channel_setting(self, channel_id: int, key: str, value: Any) -> None:
        """Store one JSON-serialisable value; `None` removes the key."""
        async with self._tx() as db:
            if value is None:
                await db.execute("DELETE FROM channel_settings WHERE channel_id = ? AND key = ?", (channel_id, key))
            else:
                await db.execute(
                    "INSERT INTO channel_settings (channel_id, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT(channel_id, key) DO UPDATE SET value = excluded.value",
                    (channel_id, key, json.dumps(value)),
                )

    async def reset_channel_settings(self, channel_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM channel_settings WHERE channel_id = ?", (channel_id,))

    # -- consent -------------------------------------------------------------------------------------------------

    async def set_opt_out(self, user_id: int, opted_out: bool, names: Iterable[str] = ()) -> None:
        """Record a member's choice. Opting out also erases, in the same transaction, what `delete_user_data`
        erases (pass the member's `names` to include clone replies posted as them).
        """
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO consent (user_id, opted_out, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(user_id) DO UPDATE SET opted_out = excluded.opted_out, updated_at = excluded.updated_at",
                (user_id, int(opted_out), _now()),
            )
            if opted_out:
                await _delete_user_rows(db, user_id, names)

    async def opted_out_ids(self) -> set[int]:
        rows = await self._fetchall("SELECT user_id FROM consent WHERE opted_out = 1")
        return {r["user_id"] for r in rows}

    async def delete_user_data(self, user_id: int, names: Iterable[str] = ()) -> None:
        """Erase what the store holds about a user: their context messages (by id, or by any of `names`, which
        also catches clone replies posted as them), their feedback, and the requests they invoked.
        The consent row itself stays, since it is what keeps them opted out.
        """
        async with self._tx() as db:
            await _delete_user_rows(db, user_id, names)

    # -- clone replies and feedback ------------------------------------------------------------------------------

    async def record_reply(
        self, message_id: int, channel_id: int, author: str, invoker_id: int, request: dict[str, Any]
    ) -> None:
        """Remember a clone reply and the request (history, author, seed, sampling) that produced it."""
        async with self._tx() as db:
            await db.execute(
                "INSERT OR REPLACE INTO replies (message_id, channel_id, author, invoker_id, request, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, channel_id, author, invoker_id, json.dumps(request), _now()),
            )

    async def get_reply(self, message_id: int) -> CloneReply | None:
        rows = await self._fetchall("SELECT * FROM replies WHERE message_id = ?", (message_id,))
        if not rows:
            return None
        r = rows[0]
        return CloneReply(
            message_id=r["message_id"],
            channel_id=r["channel_id"],
            author=r["author"],
            invoker_id=r["invoker_id"],
            request=json.loads(r["request"]),
            created_at=_dt(r["created_at"]),
        )

    async def delete_reply(self, message_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM replies WHERE message_id = ?", (message_id,))

    async def add_feedback(self, message_id: int, user_id: int, value: int, context: list) -> None:
        """Record 👍 (+1) / 👎 (-1) on a clone reply with the context it answered; a user's later vote replaces
        their earlier one. Kept for future preference tuning.
        """
        if value not in (-1, 1):
            raise ValueError(f"feedback value must be +1 or -1, got {value!r}")
        async with self._tx() as db:
            await db.execute(
                "INSERT OR REPLACE INTO feedback (message_id, user_id, value, context, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (message_id, user_id, value, json.dumps(context), _now()),
            )

    async def list_feedback(self, message_id: int | None = None) -> list[dict[str, Any]]:
        """Feedback rows (all, or for one reply), as dicts with the context decoded."""
        sql, params = "SELECT * FROM feedback", ()
        if message_id is not None:
            sql, params = sql + " WHERE message_id = ?", (message_id,)
        rows = await self._fetchall(sql, params)
        return [{**dict(r), "context": json.loads(r["context"])} for r in rows]

    # -- training jobs -------------------------------------------------------------------------------------------

    async def create_job(self, config: dict[str, Any], run_dir: str | Path | None, pid: int | None, **fields) -> int:
        """Insert a job with status `running` (or `fields['status']`); returns its id."""
        values = _job_columns({"status": "running", **fields, "config": config, "run_dir": run_dir, "pid": pid})
        now = _now()
        cols = [*values, "created_at", "updated_at"]
        async with self._tx() as db:
            cur = await db.execute(
                f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                (*values.values(), now, now),
            )
            return cur.lastrowid

    async def update_job(self, job_id: int, **fields) -> None:
        """Update some of a job's fields (see `JOB_FIELDS`); `config`/`progress` are JSON-encoded."""
        values = _job_columns(fields)
        if not values:
            return
        sets = ", ".join(f"{k} = ?" for k in values)
        async with self._tx() as db:
            await db.execute(
                f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ?", (*values.values(), _now(), job_id)
            )

    async def get_job(self, job_id: int) -> Job | None:
        rows = await self._fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def list_jobs(self, statuses: Iterable[str] | None = None) -> list[Job]:
        """Jobs, newest first, optionally only those whose status is in `statuses`."""
        if statuses is None:
            rows = await self._fetchall("SELECT * FROM jobs ORDER BY id DESC")
        else:
            statuses = list(statuses)
            rows = await self._fetchall(
                f"SELECT * FROM jobs WHERE status IN ({', '.join('?' * len(statuses))}) ORDER BY id DESC", statuses
            )
        return [_job(r) for r in rows]

    # -- schedules -----------------------------------------------------------------------------------------------

    async def set_schedule(self, guild_id: int, cron: str | None) -> None:
        """Set the guild's retrain cron expression; None removes it."""
        async with self._tx() as db:
            if cron is None:
                await db.execute("DELETE FROM schedules WHERE guild_id = ?", (guild_id,))
            else:
                await db.execute(
                    "INSERT INTO schedules (guild_id, cron, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(guild_id) DO UPDATE SET cron = excluded.cron, updated_at = excluded.updated_at",
                    (guild_id, cron, _now()),
                )

    async def list_schedules(self) -> list[Schedule]:
        rows = await self._fetchall("SELECT guild_id, cron FROM schedules ORDER BY guild_id")
        return [Schedule(guild_id=r["guild_id"], cron=r["cron"]) for r in rows]


async def _delete_user_rows(db: aiosqlite.Connection, user_id: int, names: Iterable[str]) -> None:
    await db.execute("DELETE FROM context WHERE author_id = ?", (user_id,))
    for name in names:
        await db.execute("DELETE FROM context WHERE author = ?", (name,))
        await db.execute("DELETE FROM replies WHERE author = ?", (name,))
    await db.execute("DELETE FROM feedback WHERE user_id = ?", (user_id,))
    await db.execute("DELETE FROM replies WHERE invoker_id = ?", (user_id,))


def _job_columns(fields: dict[str, Any]) -> dict[str, Any]:
    """Check job field names and encode values for SQLite (JSON for dicts, text for paths and datetimes)."""
    unknown = set(fields) - JOB_FIELDS
    if unknown:
        raise ValueError(f"unknown job fields {sorted(unknown)}; valid: {sorted(JOB_FIELDS)}")
    out = {}
    for key, value in fields.items():
        if key in JSON_JOB_FIELDS and value is not None:
            value = json.dumps(value)
        elif isinstance(value, datetime):
            value = _iso(value)
        elif isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (they contain no string literals with ';')."""
    return [s.strip() for s in script.split(";") if s.strip()]


def _job(r: aiosqlite.Row) -> Job:
    return Job(
        id=r["id"],
        status=r["status"],
        name=r["name"],
        config=json.loads(r["config"]),
        run_dir=r["run_dir"],
        pid=r["pid"],
        guild_id=r["guild_id"],
        channel_id=r["channel_id"],
        message_id=r["message_id"],
        progress=json.loads(r["progress"]) if r["progress"] else None,
        checkpoint=r["checkpoint"],
        error=r["error"],
        created_at=_dt(r["created_at"]),
        updated_at=_dt(r["updated_at"]),
        finished_at=_dt(r["finished_at"]),
    )
