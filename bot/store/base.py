"""The connection, transactions and migrations that every table group of the store shares.

Durability: the database runs in WAL mode with `synchronous=FULL`. Every write method is one transaction
(`BEGIN IMMEDIATE` ... `COMMIT`), so a bot killed at any instant leaves either the whole write or none of it, and
a write that returned has been fsynced: with FULL the WAL is synced at every commit, so even a power cut loses
nothing that was acknowledged (NORMAL would only survive a process kill). Bot writes are a few per message, so
the extra fsync costs nothing noticeable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Self

import aiosqlite

from bot.store.migrations import MIGRATIONS, statements

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000  # the YouTube cache writes to the same file from another connection


def now_iso() -> str:
    return iso(datetime.now(timezone.utc))


def iso(value: datetime | str) -> str:
    """A fixed-width UTC form (always microseconds, always +00:00), so that text order is time order in SQL."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class StoreBase:
    """One shared connection; an `asyncio.Lock` keeps one transaction at a time on it.

    The table groups (`bot/store/*.py`) subclass this and `bot.store.Store` combines them.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path):
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Self:
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

    async def __aenter__(self) -> Self:
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
                for statement in statements(MIGRATIONS[target - 1]):
                    await db.execute(statement)
                await db.execute("DELETE FROM schema_version")
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            logger.info("%s: migrated schema to version %d", self.path, target)

    async def schema_version(self) -> int:
        rows = await self._fetchall("SELECT version FROM schema_version")
        return rows[0]["version"] if rows else 0
