"""Training jobs (found again after a restart) and the per-guild retrain schedules."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.base import StoreBase, iso, now_iso, parse_dt

JOB_FIELDS = frozenset(
    "status name config run_dir pid guild_id channel_id message_id progress checkpoint error finished_at".split()
)
JSON_JOB_FIELDS = frozenset({"config", "progress"})


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


class JobTables(StoreBase):
    """The `jobs` and `schedules` tables."""

    async def create_job(self, config: dict[str, Any], run_dir: str | Path | None, pid: int | None, **fields) -> int:
        """Insert a job with status `running` (or `fields['status']`); returns its id."""
        values = _job_columns({"status": "running", **fields, "config": config, "run_dir": run_dir, "pid": pid})
        now = now_iso()
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
                f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ?", (*values.values(), now_iso(), job_id)
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

    async def set_schedule(self, guild_id: int, cron: str | None) -> None:
        """Set the guild's retrain cron expression; None removes it."""
        async with self._tx() as db:
            if cron is None:
                await db.execute("DELETE FROM schedules WHERE guild_id = ?", (guild_id,))
            else:
                await db.execute(
                    "INSERT INTO schedules (guild_id, cron, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(guild_id) DO UPDATE SET cron = excluded.cron, updated_at = excluded.updated_at",
                    (guild_id, cron, now_iso()),
                )

    async def list_schedules(self) -> list[Schedule]:
        rows = await self._fetchall("SELECT guild_id, cron FROM schedules ORDER BY guild_id")
        return [Schedule(guild_id=r["guild_id"], cron=r["cron"]) for r in rows]


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
            value = iso(value)
        elif isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out


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
        created_at=parse_dt(r["created_at"]),
        updated_at=parse_dt(r["updated_at"]),
        finished_at=parse_dt(r["finished_at"]),
    )
