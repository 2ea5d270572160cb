"""The PostgreSQL schema, as the migrations that build it, and the names the code relies on."""
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
        "CREATE TABLE xpresso_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE xpresso_docs (
               kind TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C",
               name TEXT COLLATE "C", deleted BOOLEAN NOT NULL DEFAULT FALSE,
               created TEXT COLLATE "C" NOT NULL, body JSON NOT NULL,
               CONSTRAINT xpresso_docs_pkey PRIMARY KEY (kind, id))""",
        """CREATE UNIQUE INDEX xpresso_docs_live_name ON xpresso_docs (kind, grp, name)
               WHERE NOT deleted AND name IS NOT NULL""",
        "CREATE INDEX xpresso_docs_by_group ON xpresso_docs (kind, grp, created, id)",
        "CREATE INDEX xpresso_docs_by_kind ON xpresso_docs (kind, created, id)",
    ),
    (  # 2: records visible in more groups than their owner's (shared images)
        """CREATE TABLE xpresso_visibility (
               kind TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C" NOT NULL,
               CONSTRAINT xpresso_visibility_pkey PRIMARY KEY (kind, grp, id))""",
        "CREATE INDEX xpresso_visibility_by_doc ON xpresso_visibility (kind, id)",
    ),
    (  # 3: change counters per (kind, group); group '' for documents without one
        """CREATE TABLE xpresso_counters (
               kind TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C" NOT NULL, n BIGINT NOT NULL,
               CONSTRAINT xpresso_counters_pkey PRIMARY KEY (kind, grp))""",
        """INSERT INTO xpresso_counters (kind, grp, n)
               SELECT kind, COALESCE(grp, ''), 1 FROM xpresso_docs UNION SELECT kind, grp, 1 FROM xpresso_visibility""",
    ),
    (  # 4: identity is not a name: users' uid, tokens' user_id, tokens of gone users revoked
        upgrade_identity,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
COUNTERS_VERSION = 3  # the schema that has xpresso_counters

NAME_INDEX = "xpresso_docs_live_name"
# Serialises concurrent `init` runs on one database (pg_advisory_xact_lock key: "xpresso" in ASCII).
INIT_LOCK_KEY = 0x7870726573736F

COUNTERS = CounterTable("xpresso_counters", "%s")
