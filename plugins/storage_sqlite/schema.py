"""The SQLite schema, as the migrations that build it."""
from __future__ import annotations

from typing import Callable, Union

from xpresso_env.storage import Tx
from xpresso_env.storage.identity_upgrade import upgrade_identity
from xpresso_env.storage.sql_counters import CounterTable

# Each entry upgrades the schema from version i to i+1: SQL statements, or a document step run
# on the init transaction.
Step = Union[str, Callable[[Tx], None]]
MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    (  # 1: documents and their index columns
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE docs (
               kind TEXT NOT NULL, id TEXT NOT NULL, grp TEXT, name TEXT,
               deleted INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, body TEXT NOT NULL,
               PRIMARY KEY (kind, id))""",
        "CREATE UNIQUE INDEX docs_live_name ON docs (kind, grp, name) WHERE deleted = 0 AND name IS NOT NULL",
        "CREATE INDEX docs_by_group ON docs (kind, grp, created, id)",
    ),
    (  # 2: records visible in more groups than their owner's (shared images)
        """CREATE TABLE visibility (kind TEXT NOT NULL, id TEXT NOT NULL, grp TEXT NOT NULL,
               PRIMARY KEY (kind, grp, id))""",
    ),
    (  # 3: change counters per (kind, group); group '' for documents without one
        """CREATE TABLE counters (kind TEXT NOT NULL, grp TEXT NOT NULL, n INTEGER NOT NULL,
               PRIMARY KEY (kind, grp)) WITHOUT ROWID""",
        """INSERT INTO counters (kind, grp, n)
               SELECT kind, COALESCE(grp, ''), 1 FROM docs UNION SELECT kind, grp, 1 FROM visibility""",
    ),
    (  # 4: identity is not a name: users' uid, tokens' user_id, tokens of gone users revoked
        upgrade_identity,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
COUNTERS_VERSION = 3  # the schema that has the counters table

COUNTERS = CounterTable("counters", "?")
