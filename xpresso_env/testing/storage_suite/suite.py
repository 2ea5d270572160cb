"""The documents suite every backend runs (:class:`StorageConformance`), made of its parts."""
from __future__ import annotations

from .documents import DocumentChecks
from .queries import QueryChecks
from .schema import SchemaChecks
from .transactions import TransactionChecks

__all__ = ["StorageConformance"]


class StorageConformance(SchemaChecks, DocumentChecks, QueryChecks, TransactionChecks):
    """The documents interface. Subclass and provide a ``backend_spec`` fixture (see the package
    docstring)."""
