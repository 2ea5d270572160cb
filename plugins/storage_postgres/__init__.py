"""PostgreSQL storage: for teams that outgrow one process. psycopg 3 with a pool of its own.

The layout follows the SQLite plugin (one ``xpresso_docs`` table of documents plus their index
columns, ``xpresso_visibility`` for the extra groups a document is visible in, the schema version
in ``xpresso_meta``); tables are prefixed because a PostgreSQL database is often shared. The
database itself enforces uniqueness: the primary key (kind, id) and a partial unique index on
(kind, grp, name) among live documents, so any number of processes can write at once.

Choices worth knowing:

* ``body`` is ``json`` (validated text, kept verbatim), not ``jsonb``: nothing queries inside
  bodies in SQL (filters run in Python, see ``storage.filter_docs``), writes skip the jsonb
  decomposition, and every body another backend holds fits -- jsonb refuses ``\\u0000`` in strings.
  ``ALTER TABLE xpresso_docs ALTER body TYPE jsonb USING body::jsonb`` is a future migration away
  if SQL-side filters are ever wanted. Bodies are fetched as ``body::text`` and decoded with
  ``json.loads``: about 4 times quicker than psycopg's json loader for a list of 50.
* Lists look up each document's visible groups only when the kind has visibility rows at all
  (an uncorrelated EXISTS, which PostgreSQL evaluates once per query): kinds that are never shared
  skip 50 index probes, and ``visible`` is still right for every kind.
* Change counters (``ChangeCounters``) live in ``xpresso_counters``, kept by
  ``xpresso_env.storage.sql_counters`` as on SQLite: one bump statement per write transaction, just before
  COMMIT, so the counter rows stay locked for the commit only (bumping inside each INSERT/UPDATE
  would lock them from the first write on, in any order). Migration 3 starts the counter of every
  (kind, group) that already holds documents at 1 (0 stays "never written"). Processes running an
  older xpresso-env do not bump counters: stop them all before ``xpresso-env init`` upgrades.
* Text columns are ``COLLATE "C"``: ordering by (created, id) is by code point, as in SQLite and
  YAML, whatever the database's collation.
* Writes run in READ COMMITTED with ``SELECT ... FOR UPDATE`` for ``get(lock=True)``; reads run in
  REPEATABLE READ READ ONLY, a consistent snapshot. A refused write (duplicate name...) leaves the
  transaction usable, as in the other backends: ``insert`` is one ``ON CONFLICT DO NOTHING``
  statement (then one look-up says which conflict it was), an ``update`` to a live name runs in a
  savepoint. Each write is one statement (plus one for new visible groups on update).
* Connections come from a pool (:mod:`.pool`), made in the thread that asks for one: a refused
  connection fails that request at once. One that a restart broke is dropped on its first
  statement (nothing done yet, so the next connection is tried at once): a database that restarts
  is used again without a restart of ours. ``storage.busy_timeout_s`` bounds the wait for a row
  lock (``lock_timeout``) and, with ``statement_timeout_s``, for a free pooled connection.
* A hung database is an outage, not a freeze (CONTRACT §16): each connection is made within
  ``storage.connect_timeout_s``, has TCP keepalives and the server's ``statement_timeout``
  (``storage.statement_timeout_s``), and :mod:`.guard` cuts a statement a hung server never
  answers shortly after that. A request thread is never held longer than these bounds.
* A circuit breaker keeps an outage from costing every request a wait: the first connection that
  cannot be made, or statement cut, opens it; requests then fail at once with
  ``StorageUnavailable`` (a 503) while a background check tries a new connection every
  ``retry_interval_s``, and its success closes the breaker. Nothing connects at construction, so
  the backend is built (and ``serve`` starts) while the database is down.
* psycopg is imported only when this backend is used; without it, a ConfigError names the
  ``pip install`` to run.

Its modules: :mod:`.schema` (the migrations), :mod:`.errors` (psycopg's errors as domain errors),
:mod:`.tx` (a transaction's statements), :mod:`.pool` (the connection pool), :mod:`.guard` (the
client-side statement bound), :mod:`.breaker` (the circuit breaker) and :mod:`.store`
(connections, transactions, init).
"""
from __future__ import annotations

from xpresso_env.config import Settings
from xpresso_env.core.errors import ConfigError
from xpresso_env.hookspecs import hookimpl
from xpresso_env.storage import StorageBackendInfo

from .breaker import CircuitBreaker
from .errors import INSTALL_HINT
from .schema import MIGRATIONS, SCHEMA_VERSION
from .store import PostgresStorage

__all__ = ["PostgresStorage", "CircuitBreaker", "MIGRATIONS", "SCHEMA_VERSION", "INSTALL_HINT",
           "xpresso_storage_backends"]


def _factory(settings: Settings) -> PostgresStorage:
    if not settings.storage.dsn:
        raise ConfigError("storage.dsn: required by the postgres storage backend "
                          "(e.g. 'postgresql://xpresso@db.example.com/xpresso')")
    s = settings.storage
    return PostgresStorage(s.dsn, pool_max=s.pool_max, timeout_s=s.busy_timeout_s,
                           statement_timeout_s=s.statement_timeout_s, connect_timeout_s=s.connect_timeout_s)


@hookimpl
def xpresso_storage_backends():
    return [StorageBackendInfo(name="postgres", description="PostgreSQL (psycopg 3, pooled); for several servers",
                               factory=_factory)]
