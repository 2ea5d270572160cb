"""psycopg, imported when the backend is used, and its errors as the domain errors the services
understand."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from xpresso_env.core.errors import (
    AlreadyExists,
    ConfigError,
    NameConflict,
    SchemaOutdated,
    StorageError,
    StorageUnavailable,
)

from .schema import NAME_INDEX

INSTALL_HINT = "pip install 'xpresso-env[postgres]'"


def psycopg_module():
    """psycopg, or a ConfigError naming what to install."""
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(f"storage.backend: the postgres backend needs psycopg 3 "
                          f"({exc.name} is missing): {INSTALL_HINT}") from None
    return psycopg


def translate(exc: Exception) -> Exception:
    """A psycopg error as the domain error the services understand."""
    import psycopg
    from psycopg import errors as pe

    if isinstance(exc, pe.UniqueViolation):
        if exc.diag.constraint_name == NAME_INDEX:
            return NameConflict("A record with this name already exists in this group.")
        return AlreadyExists("A record with this id already exists.")
    if isinstance(exc, pe.UndefinedTable):
        return SchemaOutdated()
    if isinstance(exc, (pe.LockNotAvailable, pe.DeadlockDetected, pe.SerializationFailure)):
        return StorageUnavailable("The database is busy, try again later.")
    if isinstance(exc, pe.QueryCanceled):  # statement_timeout (storage.statement_timeout_s)
        return StorageUnavailable("The database took too long to answer, try again later.")
    # Connection refused, lost or timed out, server shutting down.
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StorageUnavailable("The database is unavailable, try again later.")
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return StorageError(f"PostgreSQL error: {type(exc).__name__}: {first_line}")


@contextmanager
def translated() -> Iterator[None]:
    """Within: a psycopg error leaves as its domain error (:func:`translate`)."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc
