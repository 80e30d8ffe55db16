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
    # 2: sampling profiles, word rules, the base model's chat, auto-reply opt-ins, measured load times, and a
    # one-step undo for context clears (cleared rows are kept, hidden, until the next clear or a restore).
    """
    CREATE TABLE sampling_profiles (
        guild_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        options TEXT NOT NULL,
        author_id INTEGER,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (guild_id, name)
    );
    CREATE TABLE word_rules (
        channel_id INTEGER NOT NULL,
        word TEXT NOT NULL,
        bias REAL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (channel_id, word)
    );
    CREATE TABLE base_context (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id INTEGER NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        author_id INTEGER,
        created_at TEXT NOT NULL,
        cleared_at TEXT
    );
    CREATE INDEX base_context_channel ON base_context(channel_id, id);
    CREATE TABLE autoreply_optin (
        guild_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE TABLE load_times (
        checkpoint TEXT PRIMARY KEY,
        seconds REAL NOT NULL,
        updated_at TEXT NOT NULL
    );
    ALTER TABLE context ADD COLUMN cleared_at TEXT;
    """,
    # 3: feedback is kept per version of a reply (a regenerated reply keeps its message id), so one member's 👍 on
    # the first version and 👎 on the second are both kept: a preference pair. Plus the "Real or clone?" game.
    """
    CREATE TABLE feedback_by_version (
        message_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        reply_text TEXT NOT NULL,
        value INTEGER NOT NULL,
        context TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (message_id, user_id, reply_text)
    );
    INSERT INTO feedback_by_version (message_id, user_id, reply_text, value, context, created_at)
        SELECT message_id, user_id, COALESCE(json_extract(context, '$[#-1][1]'), ''), value, context, created_at
        FROM feedback;
    DROP TABLE feedback;
    ALTER TABLE feedback_by_version RENAME TO feedback;
    CREATE TABLE games (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        host_id INTEGER NOT NULL,
        rounds INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE game_rounds (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        game_id INTEGER NOT NULL REFERENCES games(id),
        guild_id INTEGER NOT NULL,
        number INTEGER NOT NULL,
        source_message_id INTEGER NOT NULL,
        author TEXT NOT NULL,
        author_id INTEGER,
        text TEXT NOT NULL,
        is_real INTEGER NOT NULL,
        model TEXT,
        attribution INTEGER NOT NULL,
        message_id INTEGER,
        created_at TEXT NOT NULL,
        revealed_at TEXT
    );
    CREATE UNIQUE INDEX game_rounds_source ON game_rounds(guild_id, source_message_id);
    CREATE TABLE game_votes (
        round_id INTEGER NOT NULL REFERENCES game_rounds(id),
        user_id INTEGER NOT NULL,
        guess_real INTEGER,
        guess_author TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (round_id, user_id)
    );
    """,
]


def statements(script: str) -> list[str]:
    """Split a migration script into statements (they contain no string literals with ';')."""
    return [s.strip() for s in script.split(";") if s.strip()]
