"""The storage conformance suite: the pytest classes that hold a storage backend to its contract.

It holds a backend to the contract in ``xpresso_env/storage/__init__.py`` through the ``Doc`` API, using real
records (``xpresso_env.core.models``) turned into documents by ``xpresso_env.core.codec``.

Using it
--------
A backend's test module subclasses the classes that apply to it (see below) and provides ONE
fixture, ``backend_spec``::

    import pytest
    from xpresso_env.testing.storage_suite import ChangeCounterConformance, ProcessConformance

    class TestSQLiteConformance(ChangeCounterConformance, ProcessConformance):
        @pytest.fixture
        def backend_spec(self, tmp_path):
            return {"storage": {"backend": "sqlite", "path": str(tmp_path / "x.sqlite3")}}

``backend_spec`` (function scope) describes a **fresh, empty, not initialised** store for the
current test as a JSON-serialisable dict, so that child processes can open the same store:

* every key except ``plugins`` is a settings override, handed to
  ``xpresso_env.config.load_settings(env={}, overrides=...)``; ``storage.backend`` picks the plugin;
* ``plugins`` (optional): importable module names registered as extra pluggy plugins, for a
  third-party backend that is not installed through an entry point.

:func:`open_backend` turns a spec into a backend object (through the plugin manager, as the
service does). Each test gets one store; the suite's fixtures open backend objects on it:

* ``open_store()``: a NEW backend object on the test's store, not initialised:
  ``open_backend(spec)``. A backend whose store lives in this process (no spec can name it)
  overrides this fixture instead of giving ``backend_spec``.
* ``make_backend(*, init=True, target_version=None)``: ``open_store()``, initialised
  (``init(target_version)``) unless ``init=False``. Call it again for a second object on the SAME
  store (what another process or a restart would see). Every object it made is closed at teardown.
* ``backend``: ``make_backend()``, the usual starting point.

Knobs are class attributes (``THREADS``, ``INCREMENTS_PER_THREAD``, ...) a subclass may lower
for a slow backend. ``test_schema_upgrade_from_previous_version`` writes documents without
``visible`` at version ``schema_version - 1``; a backend whose previous schema cannot hold those
must override it.

One class per part of the contract; a backend's test class subclasses each that applies:

* :class:`StorageConformance`: the documents interface, in one process (threads, several backend
  objects on one store). Every backend.
* :class:`ProcessConformance`: the same store opened by child processes: two writers racing, a
  commit seen across processes, every acknowledged write surviving a SIGKILL. Every backend whose
  store other processes can open (not an in-memory test double).
* :class:`ChangeCounterConformance`: the optional change counters (``ChangeCounters`` in
  ``xpresso_env/storage/__init__.py``), for a backend that claims them. The documents suite checks that
  claim and this class go together: a backend that claims counters without running their tests
  fails, and so does one that runs them without claiming. A backend with ONE counter for the
  whole store (allowed: it bumps more than asked) says ``versions_store_wide = True``; the
  assertions that a write leaves the counters of unrelated keys alone are then left out. Writes
  to a store still at the previous schema (the upgrade test) must work, with or without bumps;
  after ``init`` they must bump.

* :class:`ChangeNoticeConformance`: the optional change notices (``ChangeNotices``), for a
  backend that claims them: a commit tells every listener of the store (another backend object
  included), after the commit only; a rollback tells nobody; ``interrupt`` ends a wait. As for
  the counters, the documents suite checks that the claim and this class go together.

For example ``class TestSQLiteConformance(ChangeCounterConformance, ProcessConformance)``, or
``class TestMemoryConformance(StorageConformance)`` for a documents-only store in one process
(which overrides ``open_store`` instead of giving a spec: see
``tests/storage/test_memory_conformance.py``).

Child processes run ``python -c`` with :func:`child_main`; they print one line per acknowledged
(committed) write, so the parent knows what must survive.

Its modules: :mod:`.records` (opening a backend from a spec, the records and helpers, which
backend-specific tests use too), :mod:`.base` (knobs and fixtures), the parts of the documents
suite (:mod:`.schema`, :mod:`.documents`, :mod:`.queries`, :mod:`.transactions`, put together in
:mod:`.suite`), :mod:`.processes`, :mod:`.counters` and :mod:`.children` (the child processes).
"""
from __future__ import annotations

from .children import child_main, spawn_child
from .counters import ChangeCounterConformance
from .notices import ChangeNoticeConformance
from .processes import ProcessConformance
from .records import (
    T0,
    at,
    counting,
    ids,
    increment_attempts,
    insert,
    make_engine,
    make_group,
    make_harness,
    make_image,
    make_user,
    open_backend,
    sample_records,
    store_wide,
    uid,
    versions,
)
from .suite import StorageConformance

__all__ = ["StorageConformance", "ProcessConformance", "ChangeCounterConformance", "ChangeNoticeConformance",
           "open_backend", "child_main",
           "spawn_child", "T0", "at", "uid", "make_group", "make_user", "make_harness", "make_engine", "make_image",
           "sample_records", "insert", "increment_attempts", "ids", "counting", "versions", "store_wide"]
