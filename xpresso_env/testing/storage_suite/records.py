"""The suite's records and small helpers: a backend opened from a spec, real records with fixed
times (so documents compare exactly), and reading the change counters. Backend-specific tests
import these too."""
from __future__ import annotations

import dataclasses
import importlib
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from xpresso_env.core.codec import from_doc, to_doc
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
from xpresso_env.storage import ChangeCounters, Doc, Key, StorageBackend, change_counters


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
                            lease_until=1_709_528_832_123_456, attempts=2),  # at(65) in µs: runtime/lease.py
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
    """Whether the backend keeps one change counter for the whole store (see the package docstring)."""
    return counting(backend).versions_store_wide
