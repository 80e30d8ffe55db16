"""The bot database's schema, as an append-only list of migration scripts.

`schema_version` holds the number of scripts applied; `Store.open` applies the missing ones in order, each in
its own transaction. Never edit a script that has shipped: add a new one at the end.
"""

from __future__ import annotations

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


def statements(script: str) -> list[str]:
    """Split a migration script into statements (they contain no string literals with ';')."""
    return [s.strip() for s in script.split(";") if s.strip()]
