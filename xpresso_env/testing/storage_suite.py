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

Three classes, one per part of the contract; a backend's test class subclasses each that applies:

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

For example ``class TestSQLiteConformance(ChangeCounterConformance, ProcessConformance)``, or
``class TestMemoryConformance(StorageConformance)`` for a documents-only store in one process
(which overrides ``open_store`` instead of giving a spec: see
``tests/storage/test_memory_conformance.py``).

Child processes run ``python -c`` with :func:`child_main`; they print one line per acknowledged
(committed) write, so the parent knows what must survive.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Optional

import pytest

from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.errors import AlreadyExists, NameConflict, NotFound, SchemaOutdated
from xpresso_env.core.models import (
    ConfigurationState,
    Engine,
    EngineType,
    Group,
    Harness,
    HarnessType,
    Image,
    ImageStatus,
    OperationalState,
    Revocation,
    Role,
    User,
)
from xpresso_env.storage import (
    ChangeCounters,
    CountingTx,
    Doc,
    Key,
    StorageBackend,
    Tx,
    change_counters,
    check_ready,
    filter_docs,
)

# ----------------------------------------------------------------------------------------------
# Opening a backend from a spec (shared by the fixtures and the child processes)


def open_backend(spec: dict[str, Any]) -> StorageBackend:
    """A backend object (not initialised) for ``spec``, built the way the service builds one."""
    from xpresso_env.config import load_settings
    from xpresso_env.plugin import make_plugin_manager, pick_storage

    overrides = {k: v for k, v in spec.items() if k != "plugins"}
    extra = [importlib.import_module(name) for name in spec.get("plugins", ())]
    settings = load_settings(env={}, overrides=overrides)
    pm = make_plugin_manager(extra_plugins=extra)
    return pick_storage(pm, settings.storage.backend).factory(settings)


# ----------------------------------------------------------------------------------------------
# Real records with fixed times, so documents compare exactly

T0 = datetime(2024, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def make_group(name: str, created: float = 0) -> Group:
    return Group(name=name, date_created=at(created))


def make_user(name: str, created: float = 0, **kw: Any) -> User:
    return User(name=name, date_created=at(created), **kw)


def make_harness(n: int, group: str = "alpha", name: Optional[str] = None, created: float = 0,
                 **kw: Any) -> Harness:
    return Harness(id=uid(n), group=group, name=name or f"harness-{n}", harness=HarnessType.PYATS,
                   path=f"/ws/h{n}", created_by="alice", date_created=at(created),
                   date_modified=at(created), **kw)


def make_engine(n: int, group: str = "alpha", name: Optional[str] = None, created: float = 0,
                **kw: Any) -> Engine:
    return Engine(id=uid(n), group=group, name=name or f"engine-{n}", type=EngineType.JENKINS,
                  base_url=f"https://ci{n}.example.com/", created_by="alice", date_created=at(created),
                  date_modified=at(created), **kw)


def make_image(n: int, group: str = "alpha", groups: tuple[str, ...] = (), created: float = 0,
               **kw: Any) -> Image:
    return Image(id=uid(n), group=group, name="polaris", tag=f"v{n}", git_ref="main", submitter="alice",
                 nfs_path=f"/nfs/{n}.tar", retention_day=6, date_created=at(created),
                 date_updated=at(created), groups=groups, **kw)


def sample_records() -> dict[str, Any]:
    """One rich record of every kind (every optional field set, non-ASCII text, nesting)."""
    return {
        "group": make_group("Ünïcode-group"),
        "user": make_user("bob", superuser=True, roles={"alpha": Role.GROUP_ADMIN, "beta": Role.GUEST}),
        "revocation": Revocation(jti="a1b2c3", date_created=at(1), user="bob"),
        "harness": make_harness(1, name="smoke ✓ tests", supporting_path="/ws/support",
                                configuration_state=ConfigurationState.MAINTENANCE,
                                operational_state=OperationalState.ONLINE, site="SJC", bldg="17",
                                support_liveview=True),
        "engine": make_engine(2, site="RTP", username="jenkins", api_token="s3cr3t\"'\\",
                              operational_state=OperationalState.OFFLINE),
        "image": make_image(3, groups=("beta", "gamma"), status=ImageStatus.SUCCESSFUL, size=123456789012,
                            virtual_size=2 ** 40, image_id="sha256:abc", jobs=["a_job.py", "b_job.py"],
                            manifests=["m.tem"], pin_version=True, base_ref="v1.0",
                            meta={"nested": {"list": [1, 2, {"x": None}], "flag": False}, "n": -3},
                            log_path="/logs/3.log", built_at=at(5), claimed_by="worker-1",
                            lease_until=at(65), attempts=2),
    }


def insert(backend: StorageBackend, *records: Any) -> list[Doc]:
    docs = [r if isinstance(r, Doc) else to_doc(r) for r in records]
    with backend.write() as tx:
        for d in docs:
            tx.insert(d)
    return docs


def increment_attempts(backend: StorageBackend, image_id: str) -> None:
    """A claim-style read-modify-write: the pattern the build queue relies on."""
    with backend.write() as tx:
        doc = tx.get("image", image_id, lock=True)
        assert doc is not None
        image = from_doc(doc)
        tx.update(to_doc(dataclasses.replace(image, attempts=image.attempts + 1)))


def ids(docs: list[Doc]) -> list[str]:
    return [d.id for d in docs]


def counting(backend: StorageBackend) -> ChangeCounters:
    """The backend's change counters; fails the test if it claims none."""
    counters = change_counters(backend)
    assert counters is not None, f"storage '{backend.name}' claims no change counters"
    return counters


def versions(backend: StorageBackend, keys: list[Key]) -> tuple[int, ...]:
    """Change counters read in a read transaction of their own, as a response cache reads them."""
    with counting(backend).read() as tx:
        got = tx.versions(keys)
    assert isinstance(got, tuple) and len(got) == len(keys) and all(type(v) is int for v in got), got
    return got


def store_wide(backend: StorageBackend) -> bool:
    """Whether the backend keeps one change counter for the whole store (see the module docstring)."""
    return counting(backend).versions_store_wide


# ----------------------------------------------------------------------------------------------
# Child processes


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import what the parent imports (a plugin module living next to the tests).
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn_child(task: str, spec: dict[str, Any], params: dict[str, Any]) -> subprocess.Popen:
    code = "import sys; from xpresso_env.testing.storage_suite import child_main; child_main(sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, task, json.dumps(spec), json.dumps(params)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_child_env())


def child_main(argv: list[str]) -> None:
    """Entry point of the suite's child processes: ``TASK SPEC_JSON PARAMS_JSON``."""
    task, spec, params = argv[0], json.loads(argv[1]), json.loads(argv[2])
    backend = open_backend(spec)
    if task == "stream":
        _child_stream(backend)
    elif task == "hammer":
        _child_hammer(backend, **params)
    elif task == "insert":
        insert(backend, make_harness(params["n"], group=params["group"]))
        backend.close()
        print("committed", flush=True)
    else:  # pragma: no cover
        raise SystemExit(f"unknown task {task!r}")


def stream_record(i: int) -> Harness:
    return make_harness(100000 + i, group=f"g{i % 3}", name=f"stream-{i}", created=i / 1000,
                        site="x" * 200)


def _child_stream(backend: StorageBackend) -> None:
    # Writes until killed; a line is printed only once the commit has returned.
    for i in range(10 ** 6):
        with backend.write() as tx:
            tx.insert(to_doc(stream_record(i)))
        print(i, flush=True)


def _child_hammer(backend: StorageBackend, worker: int, counter: str, increments: int,
                  names: list[str]) -> None:
    print("ready", flush=True)
    sys.stdin.readline()  # the parent releases both workers at once
    won, conflicts = [], 0
    for k in range(max(increments, len(names))):
        if k < increments:
            increment_attempts(backend, counter)
        if k < len(names):
            try:
                with backend.write() as tx:
                    tx.insert(to_doc(make_harness(1000 * (worker + 1) + k, group="race", name=names[k])))
                won.append(names[k])
            except NameConflict:
                conflicts += 1
    backend.close()
    print(json.dumps({"won": won, "conflicts": conflicts}), flush=True)


def _read_lines(proc: subprocess.Popen, until: Callable[[list[str]], bool], timeout: float) -> list[str]:
    """Lines from the child's stdout until ``until(lines)`` or EOF; fails on timeout."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while not until(lines):
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                pytest.fail(f"child timed out after {timeout}s; got {len(lines)} lines")
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
    finally:
        sel.close()
    return lines


# ----------------------------------------------------------------------------------------------
# The suite


class StorageConformance:
    """The documents interface. Subclass and provide a ``backend_spec`` fixture (see the module
    docstring)."""

    THREADS = 6
    INCREMENTS_PER_THREAD = 15
    CHILD_TIMEOUT_S = 60.0  # for threads and child processes to finish

    # -- fixtures --------------------------------------------------------------------------------

    @pytest.fixture
    def backend_spec(self) -> dict[str, Any]:  # pragma: no cover - the subclass provides it
        raise NotImplementedError("a StorageConformance subclass must provide the backend_spec fixture")

    @pytest.fixture
    def open_store(self, backend_spec) -> Callable[[], StorageBackend]:
        """A new backend object on the test's store, not initialised."""
        return lambda: open_backend(backend_spec)

    @pytest.fixture
    def make_backend(self, open_store) -> Iterator[Callable[..., StorageBackend]]:
        opened: list[StorageBackend] = []

        def make(*, init: bool = True, target_version: Optional[int] = None) -> StorageBackend:
            backend = open_store()
            opened.append(backend)
            if init:
                backend.init(target_version)
            return backend

        yield make
        for backend in reversed(opened):
            backend.close()

    @pytest.fixture
    def backend(self, make_backend) -> StorageBackend:
        return make_backend()

    # -- protocol and schema ---------------------------------------------------------------------

    def test_protocols(self, backend):
        assert isinstance(backend, StorageBackend)
        assert isinstance(backend.name, str) and backend.name
        assert backend.schema_version >= 1
        with backend.read() as tx:
            assert isinstance(tx, Tx)
        with backend.write() as tx:
            assert isinstance(tx, Tx)

    def test_the_suite_proves_what_the_backend_claims(self, backend):
        claims = change_counters(backend) is not None
        proves = isinstance(self, ChangeCounterConformance)
        assert claims == proves, (
            f"storage '{backend.name}' {'claims' if claims else 'does not claim'} change counters: "
            f"its conformance class must {'' if claims else 'not '}subclass ChangeCounterConformance")

    def test_fresh_store_is_version_0_and_init_brings_it_up(self, make_backend):
        fresh = make_backend(init=False)
        assert fresh.current_version() == 0
        with pytest.raises(SchemaOutdated):
            check_ready(fresh)
        assert fresh.init() == fresh.schema_version
        assert fresh.current_version() == fresh.schema_version
        check_ready(fresh)
        check_ready(make_backend(init=False))  # another object sees the schema too

    def test_init_is_idempotent(self, backend, make_backend):
        (h,) = insert(backend, make_harness(1))
        assert backend.init() == backend.schema_version
        assert backend.init() == backend.schema_version
        other = make_backend()
        assert other.init() == other.schema_version
        with other.read() as tx:
            assert tx.get("harness", h.id) == h

    def test_concurrent_init_on_a_fresh_store(self, make_backend):
        backends = [make_backend(init=False) for _ in range(4)]
        results: list[Any] = []
        barrier = threading.Barrier(len(backends))

        def run(b: StorageBackend) -> None:
            barrier.wait()
            try:
                results.append(b.init())
            except Exception as exc:  # reported below
                results.append(exc)

        threads = [threading.Thread(target=run, args=(b,)) for b in backends]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [backends[0].schema_version] * len(backends)
        insert(backends[0], make_harness(1))

    def _upgraded_store(self, make_backend) -> tuple[StorageBackend, list[Any]]:
        """A store initialised at the previous schema, given documents, then upgraded by another
        backend object: that object and the documents."""
        old = make_backend(init=False)
        newest = old.schema_version
        kept = [make_group("alpha"), make_user("carol", roles={"alpha": Role.MEMBER}),
                make_harness(1, created=1), make_engine(2, created=2), make_image(3, created=3)]
        if newest >= 2:
            assert old.init(target_version=newest - 1) == newest - 1
            assert old.current_version() == newest - 1
            with pytest.raises(SchemaOutdated):
                check_ready(old)
            insert(old, *kept)  # documents without `visible`: what the previous schema holds
            old.close()
        else:
            old.init()
            insert(old, *kept)
        new = make_backend(init=False)
        assert new.init() == newest
        assert new.current_version() == newest
        check_ready(new)
        return new, kept

    def test_schema_upgrade_from_previous_version(self, make_backend):
        new, kept = self._upgraded_store(make_backend)
        with new.read() as tx:
            for record in kept:
                assert from_doc(tx.get(record.KIND, str(record.id))) == record
        # The newest schema's features work on the upgraded store.
        shared = make_image(4, groups=("beta",), created=4)
        insert(new, shared)
        with new.read() as tx:
            assert ids(tx.query("image", "beta")) == [str(shared.id)]
            assert ids(tx.query("image", "alpha")) == [str(uid(3)), str(shared.id)]
            assert tx.get("image", str(shared.id)).visible == ("beta",)

    # -- round trips -----------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["group", "user", "revocation", "harness", "engine", "image"])
    def test_round_trip(self, backend, make_backend, kind):
        record = sample_records()[kind]
        (doc,) = insert(backend, record)
        for b in (backend, make_backend()):
            with b.read() as tx:
                got = tx.get(kind, doc.id)
                assert got == doc
                assert from_doc(got) == record
                assert tx.query(kind) == [doc]
            with b.write() as tx:  # a write transaction reads the same
                assert tx.get(kind, doc.id) == doc
                assert tx.get(kind, doc.id, lock=True) == doc

    def test_body_text_is_kept_exactly(self, backend):
        tricky = "quotes \" ' back\\slash\nnew line\ttab NUL\x00 é 中文 🚀 \u2028 <&> %s ?"
        h = make_harness(1, site=tricky, bldg="")
        (doc,) = insert(backend, h)
        with backend.read() as tx:
            assert tx.get("harness", doc.id).body["site"] == tricky
            assert from_doc(tx.get("harness", doc.id)) == h

    def test_get_missing_is_none(self, backend):
        insert(backend, make_harness(1))
        with backend.read() as tx:
            assert tx.get("harness", str(uid(2))) is None
            assert tx.get("engine", str(uid(1))) is None  # ids are per kind
            assert tx.get("nosuchkind", "x") is None
            assert tx.query("engine") == []
            assert tx.query("harness", "nosuchgroup") == []
            assert tx.find_name("harness", "alpha", "nope") is None
        with backend.write() as tx:
            assert tx.get("harness", str(uid(2)), lock=True) is None

    def test_update_missing_is_not_found(self, backend):
        with pytest.raises(NotFound):
            with backend.write() as tx:
                tx.update(to_doc(make_harness(1)))
        with backend.read() as tx:
            assert tx.get("harness", str(uid(1))) is None

    def test_update_replaces_the_whole_document(self, backend):
        h = make_harness(1, name="old")
        insert(backend, h)
        changed = dataclasses.replace(h, name="new", path="/ws/other", site="LON", date_modified=at(9))
        with backend.write() as tx:
            tx.update(to_doc(changed))
        with backend.read() as tx:
            assert from_doc(tx.get("harness", str(h.id))) == changed
            assert tx.find_name("harness", "alpha", "old") is None
            assert tx.find_name("harness", "alpha", "new") == to_doc(changed)

    def test_purge_removes_for_good(self, backend, make_backend):
        insert(backend, make_harness(1, name="keep"), make_harness(2, name="gone"),
               make_image(3, groups=("beta",)))
        with backend.write() as tx:
            assert tx.purge("harness", str(uid(2))) is True
            assert tx.purge("image", str(uid(3))) is True
            assert tx.purge("harness", str(uid(9))) is False  # absent: nothing to do
            assert tx.get("harness", str(uid(2))) is None  # the tx sees its own purge
            assert ids(tx.query("harness", "alpha")) == [str(uid(1))]
            assert tx.query("image", "beta") == []
            tx.insert(to_doc(make_harness(4, name="gone")))  # the name is free again
        for b in (backend, make_backend()):
            with b.read() as tx:
                assert tx.get("harness", str(uid(2))) is None
                assert ids(tx.query("harness")) == [str(uid(1)), str(uid(4))]
                assert tx.query("image") == [] and tx.query("image", "beta") == []
        with backend.write() as tx:  # the same id may be inserted again after a purge
            tx.insert(to_doc(make_harness(2, name="back")))
        with backend.read() as tx:
            assert from_doc(tx.get("harness", str(uid(2)))).name == "back"

    def test_a_rolled_back_purge_keeps_the_document(self, backend):
        insert(backend, make_harness(1, name="keep"))

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.write() as tx:
                assert tx.purge("harness", str(uid(1))) is True
                raise Boom()
        with backend.read() as tx:
            assert from_doc(tx.get("harness", str(uid(1)))).name == "keep"

    def test_same_id_in_another_kind_is_allowed(self, backend):
        insert(backend, make_harness(1, name="x"), make_engine(1, name="x"))
        with backend.read() as tx:
            assert tx.get("harness", str(uid(1))).kind == "harness"
            assert tx.get("engine", str(uid(1))).kind == "engine"

    # -- uniqueness ------------------------------------------------------------------------------

    def test_duplicate_id_is_already_exists(self, backend):
        insert(backend, make_harness(1, name="a"), make_group("alpha"))
        with pytest.raises(AlreadyExists):
            insert(backend, make_harness(1, name="b"))
        with pytest.raises(AlreadyExists):
            insert(backend, make_harness(1, name="c", group="beta", deleted=True))
        with pytest.raises(AlreadyExists):
            insert(backend, make_group("alpha", created=5))
        with backend.read() as tx:
            assert [from_doc(d).name for d in tx.query("harness")] == ["a"]

    def test_duplicate_live_name_is_name_conflict(self, backend):
        insert(backend, make_harness(1, name="x"))
        with pytest.raises(NameConflict):
            insert(backend, make_harness(2, name="x"))
        # Updating another document onto a taken name is refused too.
        insert(backend, make_harness(3, name="y"))
        with pytest.raises(NameConflict):
            with backend.write() as tx:
                tx.update(to_doc(make_harness(3, name="x")))
        with backend.read() as tx:
            assert tx.find_name("harness", "alpha", "x").id == str(uid(1))
            assert tx.find_name("harness", "alpha", "y").id == str(uid(3))
            assert tx.get("harness", str(uid(2))) is None

    def test_deleted_frees_the_name_and_other_scopes_may_reuse_it(self, backend):
        insert(backend, make_harness(1, name="x", deleted=True))
        insert(backend, make_harness(2, name="x"))  # a deleted one does not hold the name
        insert(backend, make_harness(3, name="x", deleted=True))  # nor do several deleted ones
        insert(backend, make_harness(4, name="x", group="beta"))  # another group
        insert(backend, make_engine(5, name="x"))  # another kind
        with backend.write() as tx:  # soft-deleting the live one frees the name again
            tx.update(to_doc(make_harness(2, name="x", deleted=True)))
        insert(backend, make_harness(6, name="x"))
        with pytest.raises(NameConflict):  # un-deleting onto a taken name is refused
            with backend.write() as tx:
                tx.update(to_doc(make_harness(1, name="x")))
        with backend.read() as tx:
            assert tx.find_name("harness", "alpha", "x").id == str(uid(6))
            assert tx.find_name("harness", "beta", "x").id == str(uid(4))
            assert tx.find_name("engine", "alpha", "x").id == str(uid(5))
            assert len(tx.query("harness", "alpha")) == 4

    def test_unnamed_documents_never_conflict(self, backend):
        insert(backend, make_image(1), make_image(2), make_group("a"), make_group("b"), make_user("u"))
        with backend.read() as tx:
            assert len(tx.query("image", "alpha")) == 2

    # -- queries ---------------------------------------------------------------------------------

    def test_group_isolation_and_visibility(self, backend):
        insert(backend,
               make_harness(1, group="alpha", created=1), make_harness(2, group="beta", created=2),
               make_engine(3, group="alpha", created=3),
               make_image(4, group="alpha", created=4), make_image(5, group="beta", groups=("alpha",), created=5),
               make_image(6, group="gamma", groups=("alpha", "beta"), created=6),
               make_image(7, group="gamma", created=7))
        with backend.read() as tx:
            assert ids(tx.query("harness", "alpha")) == [str(uid(1))]
            assert ids(tx.query("harness", "beta")) == [str(uid(2))]
            assert ids(tx.query("engine", "beta")) == []
            assert ids(tx.query("image", "alpha")) == [str(uid(n)) for n in (4, 5, 6)]
            assert ids(tx.query("image", "beta")) == [str(uid(n)) for n in (5, 6)]
            assert ids(tx.query("image", "gamma")) == [str(uid(n)) for n in (6, 7)]
            assert ids(tx.query("image")) == [str(uid(n)) for n in (4, 5, 6, 7)]
            assert [d.visible for d in tx.query("image", "alpha")] == [(), ("alpha",), ("alpha", "beta")]
            assert tx.query("image", "beta")[1] == to_doc(make_image(6, group="gamma", groups=("alpha", "beta"),
                                                                     created=6))
            assert tx.find_name("harness", "beta", "harness-1") is None
        # Changing the visible groups changes who sees the document.
        with backend.write() as tx:
            tx.update(to_doc(make_image(6, group="gamma", groups=("beta",), created=6)))
            tx.update(to_doc(make_image(4, group="alpha", groups=("gamma",), created=4)))
        with backend.read() as tx:
            assert ids(tx.query("image", "alpha")) == [str(uid(n)) for n in (4, 5)]
            assert ids(tx.query("image", "beta")) == [str(uid(n)) for n in (5, 6)]
            assert ids(tx.query("image", "gamma")) == [str(uid(n)) for n in (4, 6, 7)]
            assert tx.get("image", str(uid(6))).visible == ("beta",)

    def test_visible_works_for_any_kind(self, backend):
        # The codec sets `visible` on images only, but the contract is the same for every kind.
        shared = dataclasses.replace(to_doc(make_harness(1, group="alpha")), visible=("beta", "gamma"))
        insert(backend, shared, make_harness(2, group="beta", created=1))
        with backend.read() as tx:
            assert tx.get("harness", shared.id) == shared
            assert tx.query("harness", "beta") == [shared, to_doc(make_harness(2, group="beta", created=1))]
            assert tx.query("harness", "alpha") == [shared]
            assert tx.query("harness", "gamma") == [shared]
            assert tx.query("harness")[0] == shared
            assert tx.find_name("harness", "alpha", "harness-1") == shared

    def test_order_is_created_then_id(self, backend):
        # Group ids are client-chosen names: order is by code point, whatever the collation.
        names = ["alpha", "Alpha", "alpha-2", "alpha_2", "Zeta", "zeta", "_x", "ä"]
        records = [make_group(n, created=1) for n in names] + [make_group("first", created=0),
                                                              make_group("last", created=2)]
        insert(backend, *reversed(records))
        expected = ["first"] + sorted(names) + ["last"]
        with backend.read() as tx:
            assert ids(tx.query("group")) == expected
        harnesses = [make_harness(n, created=(n * 7919) % 11, name=f"h{n}") for n in range(1, 30)]
        insert(backend, *harnesses)
        want = [str(h.id) for h in sorted(harnesses, key=lambda h: (to_doc(h).created, str(h.id)))]
        with backend.read() as tx:
            assert ids(tx.query("harness", "alpha")) == want
            assert ids(tx.query("harness")) == want

    def test_include_deleted(self, backend):
        insert(backend, make_harness(1, created=1), make_harness(2, created=2, deleted=True),
               make_image(3, created=3, is_deleted=True, groups=("beta",)), make_user("gone", deleted=True),
               make_user("here"))
        with backend.read() as tx:
            assert ids(tx.query("harness", "alpha")) == [str(uid(1)), str(uid(2))]
            assert ids(tx.query("harness", "alpha", include_deleted=False)) == [str(uid(1))]
            assert ids(tx.query("harness", include_deleted=False)) == [str(uid(1))]
            assert ids(tx.query("image", "beta")) == [str(uid(3))]
            assert tx.query("image", "beta", include_deleted=False) == []
            assert ids(tx.query("user", include_deleted=False)) == ["here"]
            assert tx.get("harness", str(uid(2))).deleted is True
            assert tx.find_name("harness", "alpha", "harness-2") is None

    def test_many_documents_and_filters(self, backend):
        records = [make_harness(n, group=f"g{n % 10}", created=n, site="A" if n % 2 else "B")
                   for n in range(1, 201)]
        insert(backend, *records)
        with backend.read() as tx:
            g3 = tx.query("harness", "g3")
            assert ids(g3) == [str(uid(n)) for n in range(3, 201, 10)]
            assert filter_docs(g3, {"site": "A"}) == g3
            assert filter_docs(tx.query("harness", "g4"), {"site": "A"}) == []
            assert len(tx.query("harness")) == 200

    # -- transactions ----------------------------------------------------------------------------

    def test_exception_rolls_back_the_whole_write(self, backend):
        insert(backend, make_harness(1, name="keep"), make_image(2, groups=("beta",)))

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(3, name="new")))
                tx.update(to_doc(make_harness(1, name="renamed")))
                tx.update(to_doc(make_image(2, groups=("gamma",))))
                assert tx.get("harness", str(uid(3))) is not None  # the tx sees its own writes
                raise Boom()
        with pytest.raises(NameConflict):  # a domain error leaving the block rolls back too
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(4, name="other")))
                tx.insert(to_doc(make_harness(5, name="keep")))
        with backend.read() as tx:
            assert ids(tx.query("harness")) == [str(uid(1))]
            assert from_doc(tx.get("harness", str(uid(1)))).name == "keep"
            assert ids(tx.query("image", "beta")) == [str(uid(2))]
            assert tx.query("image", "gamma") == []
        insert(backend, make_harness(6, name="new"))  # the store is still writable

    def test_a_refused_statement_does_not_spoil_the_transaction(self, backend):
        insert(backend, make_harness(1, name="taken"))
        with backend.write() as tx:
            tx.insert(to_doc(make_harness(2, name="a")))
            with pytest.raises(NameConflict):
                tx.insert(to_doc(make_harness(3, name="taken")))
            with pytest.raises(AlreadyExists):
                tx.insert(to_doc(make_harness(1, name="b")))
            with pytest.raises(NotFound):
                tx.update(to_doc(make_harness(9)))
            tx.insert(to_doc(make_harness(4, name="c")))
        with backend.read() as tx:
            assert ids(tx.query("harness")) == [str(uid(n)) for n in (1, 2, 4)]

    def test_committed_writes_are_seen_by_another_backend_object(self, backend, make_backend):
        other = make_backend()
        with other.read() as tx:  # warm whatever the other object caches
            assert tx.query("harness") == []
        (doc,) = insert(backend, make_harness(1))
        with other.read() as tx:
            assert tx.get("harness", doc.id) == doc
        with other.write() as tx:
            tx.update(to_doc(make_harness(1, name="renamed")))
        with backend.read() as tx:
            assert from_doc(tx.get("harness", doc.id)).name == "renamed"
        with pytest.raises(NameConflict):  # uniqueness holds across objects
            insert(other, make_harness(2, name="renamed"))

    def test_read_is_a_consistent_snapshot(self, backend, make_backend):
        other = make_backend()
        insert(backend, make_harness(1, created=1))
        done = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                insert(other, make_harness(2, created=2))
            except BaseException as exc:  # reported below
                errors.append(exc)
            done.set()

        with backend.read() as tx:
            first = tx.query("harness")
            writer = threading.Thread(target=write)
            writer.start()
            done.wait(2.0)  # a backend may also hold writers back while a read is open
            assert tx.query("harness") == first
            assert tx.get("harness", str(uid(2))) is None
        writer.join(self.CHILD_TIMEOUT_S)
        assert not errors
        with backend.read() as tx:
            assert ids(tx.query("harness")) == [str(uid(1)), str(uid(2))]

    # -- concurrency -----------------------------------------------------------------------------

    def _run_threads(self, n: int, target: Callable[[int], None]) -> list[BaseException]:
        barrier = threading.Barrier(n)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                barrier.wait()
                target(i)
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.CHILD_TIMEOUT_S)
        assert not any(t.is_alive() for t in threads), "threads hung"
        return errors

    def test_threads_lose_no_update(self, backend):
        image = make_image(1)
        insert(backend, image)

        def work(_: int) -> None:
            for _ in range(self.INCREMENTS_PER_THREAD):
                increment_attempts(backend, str(image.id))

        assert self._run_threads(self.THREADS, work) == []
        with backend.read() as tx:
            assert from_doc(tx.get("image", str(image.id))).attempts == self.THREADS * self.INCREMENTS_PER_THREAD

    def test_threads_racing_for_a_name_get_one_winner(self, backend):
        rounds = 4
        outcomes: list[tuple[int, str]] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            for r in range(rounds):
                try:
                    insert(backend, make_harness(1000 * r + i + 1, name=f"race-{r}"))
                    result = "won"
                except NameConflict:
                    result = "conflict"
                with lock:
                    outcomes.append((r, result))

        assert self._run_threads(self.THREADS, work) == []
        for r in range(rounds):
            results = sorted(res for rr, res in outcomes if rr == r)
            assert results == ["conflict"] * (self.THREADS - 1) + ["won"], (r, results)
        with backend.read() as tx:
            assert len(tx.query("harness", "alpha")) == rounds


class ProcessConformance(StorageConformance):
    """The store opened by other processes too (see the module docstring); needs ``backend_spec``."""

    PROCESS_INCREMENTS = 40
    PROCESS_NAMES = 20
    DURABILITY_ACKS = 25  # acknowledged writes before the SIGKILL

    def test_two_processes_lose_no_update_and_break_no_uniqueness(self, backend, backend_spec):
        counter = make_image(1, group="race")
        insert(backend, counter)
        names = [f"p-{k}" for k in range(self.PROCESS_NAMES)]
        procs = [spawn_child("hammer", backend_spec,
                             {"worker": w, "counter": str(counter.id), "increments": self.PROCESS_INCREMENTS,
                              "names": names}) for w in range(2)]
        try:
            for p in procs:
                assert _read_lines(p, lambda lines: bool(lines), self.CHILD_TIMEOUT_S) == ["ready"], \
                    p.stderr.read() if p.poll() is not None else "no ready line"
            for p in procs:  # release both at once
                p.stdin.write("go\n")
                p.stdin.flush()
            results = []
            for p in procs:
                out, err = p.communicate(timeout=self.CHILD_TIMEOUT_S)
                assert p.returncode == 0, err
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        won = sorted(n for r in results for n in r["won"])
        assert won == sorted(names)  # every name won exactly once
        assert sum(r["conflicts"] for r in results) == len(names)
        with backend.read() as tx:
            assert from_doc(tx.get("image", str(counter.id))).attempts == 2 * self.PROCESS_INCREMENTS
            live = tx.query("harness", "race", include_deleted=False)
            assert sorted(d.name for d in live) == sorted(names)


    def test_another_process_commit_is_seen(self, backend, backend_spec):
        counts = change_counters(backend) is not None
        key = [("harness", "beta")]
        seen = versions(backend, key) if counts else ()
        with backend.read() as tx:  # warm whatever the backend object caches
            assert tx.query("harness", "beta") == []
        proc = spawn_child("insert", backend_spec, {"n": 7, "group": "beta"})
        out, err = proc.communicate(timeout=self.CHILD_TIMEOUT_S)
        assert proc.returncode == 0 and out.strip() == "committed", err
        with backend.read() as tx:
            assert ids(tx.query("harness", "beta")) == [str(uid(7))]
        if counts:  # and the counters moved with the data
            assert versions(backend, key) > seen


    # -- durability ------------------------------------------------------------------------------

    def test_sigkill_mid_stream_keeps_every_acknowledged_write(self, backend, backend_spec, make_backend):
        backend.close()  # only the child touches the store while it runs
        proc = spawn_child("stream", backend_spec, {})
        try:
            acked = _read_lines(proc, lambda lines: len(lines) >= self.DURABILITY_ACKS, self.CHILD_TIMEOUT_S)
            assert len(acked) >= self.DURABILITY_ACKS, proc.stderr.read() if proc.poll() is not None else ""
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(self.CHILD_TIMEOUT_S)
            # Lines already in the pipe were acknowledged before the kill.
            acked += _read_lines(proc, lambda lines: False, self.CHILD_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        acked_i = [int(line) for line in acked]
        assert acked_i == list(range(len(acked_i)))

        reopened = make_backend()
        check_ready(reopened)
        with reopened.read() as tx:
            for i in acked_i:
                assert tx.get("harness", str(stream_record(i).id)) == to_doc(stream_record(i)), i
            found = tx.query("harness")
        # At most the one write in flight at the kill may have committed without its line.
        assert [from_doc(d) for d in found] == [stream_record(i) for i in range(len(found))]
        assert len(acked_i) <= len(found) <= len(acked_i) + 1
        # The store is not left locked or damaged: it takes writes and keeps its constraints.
        insert(reopened, make_harness(1, group="g0", name="after"))
        with pytest.raises(NameConflict):
            insert(reopened, make_harness(2, group="g0", name="stream-0"))
        with reopened.read() as tx:
            assert tx.find_name("harness", "g0", "after").id == str(uid(1))


class ChangeCounterConformance(StorageConformance):
    """The change counters, for a backend that claims them (see the module docstring)."""

    def test_protocols_of_the_counters(self, backend):
        counters = counting(backend)
        assert isinstance(counters, ChangeCounters)
        assert type(counters.versions_store_wide) is bool
        stamp = counters.change_stamp()
        assert stamp is None or type(stamp) is int
        with counters.read() as tx:
            assert isinstance(tx, CountingTx)
        with counters.write() as tx:
            assert isinstance(tx, CountingTx)

    def test_counters_work_on_an_upgraded_store(self, make_backend):
        new, _ = self._upgraded_store(make_backend)
        keys = [("image", "alpha"), ("image", "beta")]
        before = versions(new, keys)
        insert(new, make_image(4, groups=("beta",), created=4))
        assert all(a > b for a, b in zip(versions(new, keys), before))

    def test_versions_of_keys_never_written_are_0(self, backend):
        keys = [("harness", "alpha"), ("user", ""), ("image", "beta"), ("nosuchkind", "x")]
        assert versions(backend, keys) == (0, 0, 0, 0)
        assert versions(backend, []) == ()
        with counting(backend).write() as tx:  # a write transaction reads them too
            assert tx.versions(keys) == (0, 0, 0, 0)
        insert(backend, make_harness(1, group="alpha"), make_user("u"))
        assert all(v > 0 for v in versions(backend, keys)[:2])
        if not store_wide(backend):
            assert versions(backend, keys)[2:] == (0, 0)

    def test_insert_bumps_its_group_and_its_visible_groups(self, backend):
        insert(backend, make_harness(1, group="alpha"), make_image(2, group="delta"))
        touched = [("image", "alpha"), ("image", "beta"), ("image", "gamma")]
        others = [("image", "delta"), ("harness", "alpha"), ("image", ""), ("group", "")]
        before = versions(backend, touched + others)
        insert(backend, make_image(3, group="alpha", groups=("beta", "gamma")))
        after = versions(backend, touched + others)
        assert all(a > b for a, b in zip(after[:3], before[:3])), (before, after)
        if not store_wide(backend):
            assert after[3:] == before[3:]
        # A document without a group bumps (kind, "").
        before = versions(backend, [("group", ""), ("user", "")])
        insert(backend, make_group("alpha"))
        after = versions(backend, [("group", ""), ("user", "")])
        assert after[0] > before[0]
        if not store_wide(backend):
            assert after[1] == before[1]

    def test_update_bumps_the_old_and_the_new_groups(self, backend):
        insert(backend, make_image(1, group="alpha", groups=("beta", "gamma")), make_image(2, group="zeta"))
        keys = [("image", g) for g in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")]

        def changed_by(*records: Any) -> tuple[bool, ...]:
            before = versions(backend, keys)
            with backend.write() as tx:
                for r in records:
                    tx.update(to_doc(r))
            after = versions(backend, keys)
            assert all(a >= b for a, b in zip(after, before)), (before, after)  # never backwards
            return tuple(a > b for a, b in zip(after, before))

        # beta loses the document, delta gains it, gamma and the owner alpha see it change.
        got = changed_by(make_image(1, group="alpha", groups=("gamma", "delta"), attempts=1))
        assert got[:4] == (True, True, True, True)
        if not store_wide(backend):
            assert got[4:] == (False, False)
        # The document moves to another owner group: the one that loses it is bumped too.
        got = changed_by(make_image(1, group="epsilon", groups=("gamma",)))
        assert (got[0], got[2], got[4]) == (True, True, True) and got[3] is True  # delta loses it
        if not store_wide(backend):
            assert (got[1], got[5]) == (False, False)
        # A claim-style update (get with lock, then update) bumps like any other.
        before = versions(backend, [("image", "zeta")])
        increment_attempts(backend, str(uid(2)))
        assert versions(backend, [("image", "zeta")]) > before

    def test_purge_bumps_its_group_and_its_visible_groups(self, backend):
        insert(backend, make_image(1, group="alpha", groups=("beta",)), make_harness(2))
        keys = [("image", "alpha"), ("image", "beta"), ("harness", "alpha")]
        before = versions(backend, keys)
        with backend.write() as tx:
            tx.purge("image", str(uid(1)))
        after = versions(backend, keys)
        assert after[0] > before[0] and after[1] > before[1]
        if not store_wide(backend):
            assert after[2] == before[2]

    def test_a_rolled_back_write_bumps_nothing(self, backend):
        insert(backend, make_harness(1, name="taken"), make_image(2, groups=("beta",)))
        keys = [("harness", "alpha"), ("image", "alpha"), ("image", "beta"), ("image", "gamma"), ("harness", "")]
        before = versions(backend, keys)

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(3, name="new")))
                tx.update(to_doc(make_image(2, groups=("gamma",))))
                raise Boom()
        with pytest.raises(NameConflict):  # a refused write that leaves the block rolls back too
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(4, name="other")))
                tx.insert(to_doc(make_harness(5, name="taken")))
        with pytest.raises(NotFound):
            with backend.write() as tx:
                tx.update(to_doc(make_harness(6)))
        assert versions(backend, keys) == before

    def test_another_backend_object_sees_a_bump_right_after_the_commit(self, backend, make_backend):
        other = make_backend()
        key = [("harness", "alpha")]
        seen_other = versions(other, key)  # warms whatever the other object caches
        insert(backend, make_harness(1))
        now_other, now_mine = versions(other, key), versions(backend, key)
        assert now_other > seen_other
        with other.write() as tx:
            tx.update(to_doc(make_harness(1, name="renamed")))
        assert versions(other, key) > now_other
        assert versions(backend, key) > now_mine  # and the other way round

    def test_backend_versions_outside_a_transaction_agree_with_tx_versions(self, backend, make_backend):
        keys = [("harness", "alpha"), ("group", ""), ("image", "beta")]
        mine, other = counting(backend), counting(make_backend())
        assert mine.versions(keys) == versions(backend, keys)
        before = other.versions(keys)
        insert(backend, make_harness(1, group="alpha"))
        after = other.versions(keys)
        assert after[0] > before[0] and after == versions(other, keys)
        assert mine.versions([]) == ()


    def test_counters_and_data_are_one_snapshot_under_concurrent_writes(self, backend, make_backend):
        """A reader sees a counter and the data it counts together: the same value always comes
        with the same data, a larger amount of data with a larger value, never backwards; and
        after each commit, another object's versions() is larger than before it."""
        commits = 20
        watcher, reader = make_backend(), counting(make_backend())
        key = [("harness", "alpha")]
        done = threading.Event()
        seen: list[tuple[int, int]] = []  # (version, number of documents) in one read transaction
        errors: list[BaseException] = []

        def read_loop() -> None:
            try:
                while not done.is_set():
                    with reader.read() as tx:
                        (v,) = tx.versions(key)
                        seen.append((v, len(tx.query("harness", "alpha"))))
            except BaseException as exc:  # reported below
                errors.append(exc)

        def write_loop() -> None:
            try:
                last = versions(watcher, key)
                for i in range(commits):
                    insert(backend, make_harness(i + 1, created=i))
                    now = versions(watcher, key)
                    assert now > last, (i, last, now)
                    last = now
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                done.set()

        threads = [threading.Thread(target=read_loop), threading.Thread(target=write_loop)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.CHILD_TIMEOUT_S)
        assert not any(t.is_alive() for t in threads), "threads hung"
        assert not errors, errors
        seen.append((versions(reader, key)[0], commits))
        count_of: dict[int, int] = {}
        for v, n in seen:
            assert count_of.setdefault(v, n) == n, f"version {v} came with {count_of[v]} and {n} documents"
        assert seen == sorted(seen), "went backwards"

    def test_concurrent_writers_to_shared_groups_all_bump(self, backend):
        """Writers touching the same counters in different orders neither deadlock nor lose a bump."""
        per_thread = 5

        def work(i: int) -> None:
            shared = ("s1", "s2") if i % 2 else ("s2", "s1")
            for k in range(per_thread):
                insert(backend, dataclasses.replace(
                    to_doc(make_image(1000 * (i + 1) + k, group=f"own{i}", created=k)), visible=shared))

        keys = [("image", "s1"), ("image", "s2")]
        before = versions(backend, keys)
        assert self._run_threads(self.THREADS, work) == []
        after = versions(backend, keys)
        assert all(a - b >= self.THREADS * per_thread for a, b in zip(after, before)), (before, after)
        with backend.read() as tx:
            assert len(tx.query("image", "s1")) == self.THREADS * per_thread
