"""SQLite storage: the embedded default. One file, WAL, write transactions that lock up front.

Each thread gets its own connection (sqlite3 connections must not be shared mid-transaction);
``BEGIN IMMEDIATE`` takes the write lock at the start of a write so two writers never deadlock
half-way, and ``busy_timeout`` makes a second writer wait instead of failing. A read's BEGIN waits
for its first statement, and a read that says it is one statement (``SQLiteTx.one_statement_left``:
the registry's reads by id and by name, ``access/reads.py``) runs it alone, in autocommit, its own
snapshot: no BEGIN and COMMIT, each a release of the GIL on a busy server.

Writers queue: in a process on a thread lock, across processes on a lock file (:mod:`.writers`).
The writers of a process that queue behind a write run their blocks in its transaction, on its
connection, one thread at a time, and share its COMMIT (:mod:`.commit_group`): the only time a
connection serves another thread, and never two at once.

Change counters (``ChangeCounters``, see ``xpresso_env/storage/__init__.py``) live in the ``counters`` table,
kept by ``xpresso_env.storage.sql_counters`` as on PostgreSQL. A ``CommitSequence`` beside the database
gives the cache a store-wide ``change_stamp`` that costs a memory read. Migration 3 starts the counter of every (kind, group) that already holds documents at 1 (0 stays
"never written"); a cache cannot hold anything from before the upgrade, because a server whose
code needs schema 3 refuses to start on schema 2 (``check_ready``). Processes running an older
xpresso-env do not bump counters: stop them all before ``xpresso-env init`` upgrades the store.

Its modules: :mod:`.schema` (the migrations), :mod:`.tx` (a transaction's statements),
:mod:`.commit_sequence` (the store-wide stamp beside the database), :mod:`.writers` (the writers'
lock file), :mod:`.commit_group` (group commit) and :mod:`.store` (connections, transactions, init).
"""
from __future__ import annotations

from xpresso_env.config import Settings
from xpresso_env.hookspecs import hookimpl
from xpresso_env.storage import StorageBackendInfo

from .commit_sequence import CommitSequence, commit_sequence_path
from .schema import MIGRATIONS, SCHEMA_VERSION
from .store import SQLiteStorage

__all__ = ["SQLiteStorage", "CommitSequence", "commit_sequence_path", "MIGRATIONS", "SCHEMA_VERSION",
           "xpresso_storage_backends"]


def _factory(settings: Settings) -> SQLiteStorage:
    return SQLiteStorage(settings.storage_path("xpresso.sqlite3"), settings.storage.busy_timeout_s)


@hookimpl
def xpresso_storage_backends():
    return [StorageBackendInfo(name="sqlite", description="SQLite file (WAL); the embedded default",
                               factory=_factory)]
