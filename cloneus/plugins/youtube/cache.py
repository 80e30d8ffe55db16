"""The YouTube cache: video metadata, ids known to be invalid, earlier searches, and the daily quota counter.

The tables live in the bot's SQLite file (`youtube.db_path`), prefixed `youtube_` and created with `IF NOT EXISTS`,
so they sit beside the bot's own tables without a migration. The database runs in WAL mode so the bot's readers and
a training process can share it, and every write is one `BEGIN IMMEDIATE` transaction.

The cache is the source of truth for training data: a link is encoded from what is cached here, and the API is only
asked about ids not yet seen. Export/import moves it between machines as JSON lines; on import, for each id (or
search query) the newer observation wins, so importing the same file twice changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cloneus.errors import DataFormatError
from cloneus.io import atomic_write_text
from cloneus.plugins.youtube.urls import is_video_id

BUSY_TIMEOUT_SECONDS = 30.0
# SQLite caps bound parameters per statement (32766 on current builds, 999 on old ones).
MAX_PARAMS = 900
SCHEMA = """
CREATE TABLE IF NOT EXISTS youtube_videos (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, channel TEXT NOT NULL, fetched_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS youtube_invalid (id TEXT PRIMARY KEY, checked_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS youtube_searches (
    query TEXT PRIMARY KEY, video_id TEXT, searched_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS youtube_quota (
    day TEXT PRIMARY KEY, units_used INTEGER NOT NULL DEFAULT 0, exhausted INTEGER NOT NULL DEFAULT 0);
"""
# Export line "type" -> (required fields, timestamp field)
RECORD_FIELDS = {
    "video": (("id", "title", "channel", "fetched_at"), "fetched_at"),
    "invalid": (("id", "checked_at"), "checked_at"),
    "search": (("query", "video_id", "searched_at"), "searched_at"),
}


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _chunks(items: list[str], size: int = MAX_PARAMS) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class VideoCache:
    """Thread-safe access to the `youtube_*` tables of one SQLite file.

    One connection is shared by all threads behind a lock; each call is short, so the bot's worker threads never wait
    long, and a writer in another process is waited for up to `BUSY_TIMEOUT_SECONDS`.

    Args:
        db_path (`str | Path`): the SQLite file; created, with its directory, if missing.
    """

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.db_path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL still never corrupts the file; a power cut may lose the last commits, which for a cache
        # means a few re-fetched ids, and it saves an fsync per write.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self.transaction() as cur:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taken up front (`IMMEDIATE`) so a read-then-write cannot race another process."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def fetch_one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _select_in(self, sql: str, ids: Iterable[str]) -> list[tuple]:
        """Run `sql` (holding one `{}` for the placeholders) over `ids` in chunks under the parameter limit."""
        rows: list[tuple] = []
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                rows += self._conn.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    def videos(self, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Cached `id -> (title, channel)` for those of `ids` that are known valid."""
        rows = self._select_in("SELECT id, title, channel FROM youtube_videos WHERE id IN ({})", ids)
        return {vid: (title, channel) for vid, title, channel in rows}

    def invalid(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` known to be deleted, private or never to have existed."""
        return {row[0] for row in self._select_in("SELECT id FROM youtube_invalid WHERE id IN ({})", ids)}

    def store_lookup(self, found: dict[str, tuple[str, str]], invalid: Iterable[str]) -> None:
        """Record one `videos.list` answer: the videos it returned and the requested ids it did not."""
        now = utc_now_iso()
        with self.transaction() as cur:
            for vid, (title, channel) in found.items():
                cur.execute("INSERT OR REPLACE INTO youtube_videos VALUES (?, ?, ?, ?)", (vid, title, channel, now))
                cur.execute("DELETE FROM youtube_invalid WHERE id = ?", (vid,))
            for vid in invalid:
                cur.execute("INSERT OR REPLACE INTO youtube_invalid VALUES (?, ?)", (vid, now))
                cur.execute("DELETE FROM youtube_videos WHERE id = ?", (vid,))

    def search(self, query: str) -> tuple[bool, str | None]:
        """`(cached, video_id)` for a normalised search query; `video_id` is None when the search found nothing."""
        row = self.fetch_one("SELECT video_id FROM youtube_searches WHERE query = ?", (query,))
        return (row is not None, row[0] if row else None)

    def store_search(self, query: str, video_id: str | None) -> None:
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO youtube_searches VALUES (?, ?, ?)", (query, video_id, utc_now_iso()))

    def counts(self) -> dict[str, int]:
        """Rows per table: `videos`, `invalid`, `searches`."""
        with self._lock:
            return {
                name: self._conn.execute(f"SELECT COUNT(*) FROM youtube_{table}").fetchone()[0]
                for name, table in (("videos", "videos"), ("invalid", "invalid"), ("searches", "searches"))
            }

    def export_jsonl(self, path: str | Path) -> dict[str, int]:
        """Write every video, invalid id and search to `path` as JSON lines (atomically); returns counts per type."""
        with self._lock:
            videos = self._conn.execute("SELECT id, title, channel, fetched_at FROM youtube_videos ORDER BY id")
            video_lines = [
                {"type": "video", "id": i, "title": t, "channel": c, "fetched_at": f} for i, t, c, f in videos
            ]
            invalid = self._conn.execute("SELECT id, checked_at FROM youtube_invalid ORDER BY id")
            invalid_lines = [{"type": "invalid", "id": i, "checked_at": c} for i, c in invalid]
            searches = self._conn.execute("SELECT query, video_id, searched_at FROM youtube_searches ORDER BY query")
            search_lines = [{"type": "search", "query": q, "video_id": v, "searched_at": s} for q, v, s in searches]
        lines = video_lines + invalid_lines + search_lines
        atomic_write_text(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        return {"video": len(video_lines), "invalid": len(invalid_lines), "search": len(search_lines)}

    def import_jsonl(self, path: str | Path) -> dict[str, int]:
        """Merge an export into this cache in one transaction; returns how many records changed something.

        Every line is checked before anything is written, so a bad file leaves the cache untouched.

        Raises:
            DataFormatError: naming the line and field that is wrong.
        """
        records = list(_read_records(Path(path)))
        changed = {"video": 0, "invalid": 0, "search": 0}
        with self.transaction() as cur:
            for rec in records:
                changed[rec["type"]] += _merge_record(cur, rec)
        return changed


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataFormatError(path, "file not found; create it with `python -m cloneus youtube export`") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"not valid JSON ({e.msg})", line=number) from None
        if not isinstance(rec, dict) or rec.get("type") not in RECORD_FIELDS:
            raise DataFormatError(path, f"expected an object with type one of {list(RECORD_FIELDS)}", line=number)
        fields, stamp = RECORD_FIELDS[rec["type"]]
        for field in fields:
            value = rec.get(field)
            if not isinstance(value, str) and not (field == "video_id" and value is None):
                raise DataFormatError(path, f"expected a string, got {value!r}", line=number, field=field)
        for field in ("id", "video_id"):
            if rec.get(field) is not None and not is_video_id(rec[field]):
                raise DataFormatError(path, f"{rec[field]!r} is not a video id", line=number, field=field)
        try:
            # Python 3.10's fromisoformat does not read a trailing "Z".
            when = datetime.fromisoformat(
                rec[stamp].removesuffix("Z") + ("+00:00" if rec[stamp].endswith("Z") else "")
            )
        except ValueError:
            message = f"expected an ISO 8601 time, got {rec[stamp]!r}"
            raise DataFormatError(path, message, line=number, field=stamp) from None
        if when.tzinfo is None:
            raise DataFormatError(path, "expected a time with a UTC offset", line=number, field=stamp)
        rec[stamp] = when.astimezone(timezone.utc).isoformat(timespec="seconds")
        yield rec


def _latest_about(cur: sqlite3.Cursor, video_id: str) -> str | None:
    """When this cache last learned anything about `video_id` (valid or invalid), or None."""
    row = cur.execute(
        "SELECT MAX(t) FROM (SELECT fetched_at AS t FROM youtube_videos WHERE id = ?1 "
        "UNION ALL SELECT checked_at FROM youtube_invalid WHERE id = ?1)",
        (video_id,),
    ).fetchone()
    return row[0]


def _merge_record(cur: sqlite3.Cursor, rec: dict[str, Any]) -> int:
    """Apply one imported record if it is newer than what is cached (ties keep the local row); 1 if applied."""
    kind = rec["type"]
    if kind == "search":
        row = cur.execute("SELECT searched_at FROM youtube_searches WHERE query = ?", (rec["query"],)).fetchone()
        if row and row[0] >= rec["searched_at"]:
            return 0
        cur.execute(
            "INSERT OR REPLACE INTO youtube_searches VALUES (?, ?, ?)",
            (rec["query"], rec["video_id"], rec["searched_at"]),
        )
        return 1
    latest = _latest_about(cur, rec["id"])
    if kind == "video":
        if latest is not None and latest >= rec["fetched_at"]:
            return 0
        cur.execute("DELETE FROM youtube_invalid WHERE id = ?", (rec["id"],))
        cur.execute(
            "INSERT OR REPLACE INTO youtube_videos VALUES (?, ?, ?, ?)",
            (rec["id"], rec["title"], rec["channel"], rec["fetched_at"]),
        )
        return 1
    if latest is not None and latest >= rec["checked_at"]:
        return 0
    cur.execute("DELETE FROM youtube_videos WHERE id = ?", (rec["id"],))
    cur.execute("INSERT OR REPLACE INTO youtube_invalid VALUES (?, ?)", (rec["id"], rec["checked_at"]))
    return 1
