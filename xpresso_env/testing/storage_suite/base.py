"""The base of the suite's classes: knobs, fixtures and the helpers several parts use."""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Optional

import pytest

from xpresso_env.core.errors import SchemaOutdated
from xpresso_env.core.models import Role
from xpresso_env.storage import StorageBackend, check_ready

from .records import insert, make_engine, make_group, make_harness, make_image, make_user, open_backend


class SuiteBase:
    """What every part of the suite shares: the knobs, the fixtures (see the package docstring)
    and the helpers of more than one part."""

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
