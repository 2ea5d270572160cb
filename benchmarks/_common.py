"""Shared helpers of the benchmark scripts: settings for a throw-away store, seeding, /proc reads.

The benchmarks seed through the storage API directly (documents made by ``codec.to_doc`` from real
records, a few big write transactions): the quickest way to 10,000 records on every backend, and
what ``xpresso-env load`` ends up doing too, minus the YAML parsing and per-record validation.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

# Run from a checkout without installing: the repository root on the path.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from xpresso_env.config import Settings, load_settings  # noqa: E402
from xpresso_env.core.codec import to_doc  # noqa: E402
from xpresso_env.core.models import Group, Harness, HarnessType  # noqa: E402

SECRET = "benchmark-secret-" + "b" * 40
BACKENDS = ("sqlite", "yaml", "postgres")
BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)


def group_name(i: int) -> str:
    return f"group-{i:03d}"


def backend_settings(tmp: Path, backend: str, dsn: Optional[str] = None, **server: Any) -> Settings:
    """Settings for a store inside ``tmp`` (no config file, no environment read)."""
    storage: dict[str, Any] = {"backend": backend}
    if backend == "sqlite":
        storage["path"] = str(tmp / "xpresso.sqlite3")
    elif backend == "yaml":
        storage["path"] = str(tmp / "xpresso.yaml")
    elif backend == "postgres":
        storage["dsn"] = dsn
    overrides = {"storage": storage, "auth": {"secret": SECRET},
                 "images": {"nfs_root": str(tmp / "nfs"), "logs_root": str(tmp / "logs"),
                            "workspace_root": str(tmp / "ws")},
                 "builder": {"backend": "dry-run"}}
    if server:
        overrides["server"] = server
    return load_settings(None, env={}, overrides=overrides)


def write_config(path: Path, settings: Settings) -> Path:
    """The same settings as a config file, for a `xpresso-env --config FILE` subprocess."""
    import yaml

    from xpresso_env.config import settings_as_dict

    data = settings_as_dict(settings)
    data["builder"] = {"backend": settings.builder.backend}  # keep the file short: defaults elsewhere
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Seeded:
    groups: list[str]
    ids: dict[str, list[str]] = field(default_factory=dict)  # group -> harness ids, oldest first
    seconds: float = 0.0
    transactions: int = 0

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.ids.values())


def seed_harnesses(storage, n_groups: int = 200, per_group: int = 50, batch: int = 2500) -> Seeded:
    """Groups and harnesses written straight through the storage API, ``batch`` documents per
    write transaction. Creation times are distinct and increasing, so list order is fixed."""
    started = time.perf_counter()
    groups = [group_name(g) for g in range(n_groups)]
    seeded = Seeded(groups=groups)
    docs = [to_doc(Group(name=g, date_created=BASE_TIME)) for g in groups]
    n = 0
    for g, group in enumerate(groups):
        for i in range(per_group):
            created = BASE_TIME + timedelta(seconds=n)
            h = Harness(id=uuid.uuid4(), group=group, name=f"harness-{g:03d}-{i:02d}",
                        harness=HarnessType.PYATS if i % 3 else HarnessType.TCL_ATS,
                        path=f"/opt/harnesses/{group}/harness-{i:02d}", supporting_path="/opt/support",
                        site="OTT" if i % 2 else "SJC", bldg="ALL", created_by="bench",
                        date_created=created, date_modified=created)
            seeded.ids.setdefault(group, []).append(str(h.id))
            docs.append(to_doc(h))
            n += 1
    for start in range(0, len(docs), batch):
        with storage.write() as tx:
            for doc in docs[start:start + batch]:
                tx.insert(doc)
        seeded.transactions += 1
    seeded.seconds = time.perf_counter() - started
    return seeded


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL database on the local server; its DSN."""
    try:
        from xpresso_env.testing.postgres import temp_database
    except ImportError:
        temp_database = None
    if temp_database is not None:
        with temp_database(prefix="xpresso_bench") as dsn:
            yield dsn
        return
    import psycopg
    from psycopg import sql

    admin = os.environ.get("XPRESSO_TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 dbname=test")
    name = f"xpresso_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed_bench_store(settings: Settings, groups: int, per_group: int, role: str) -> tuple[Seeded, str]:
    """Initialise the store ``settings`` name, seed ``groups`` x ``per_group`` harnesses and make a
    user ``bench`` holding ``role`` in every group; returns the seeding and bench's token."""
    from xpresso_env.app import build_context

    ctx = build_context(settings, images=False, check_schema=False)
    try:
        ctx.storage.init()
        seeded = seed_harnesses(ctx.storage, groups, per_group)
        ctx.auth.add_user("bench", roles={g: role for g in seeded.groups})
        token = ctx.auth.issue_token("bench").display
    finally:
        ctx.close()
    print(f"  seeded through the storage API in {seeded.transactions} write transactions: "
          f"{seeded.seconds:.2f} s; user `bench` is {role} in all {groups} groups", flush=True)
    return seeded, token


def run_in_tempdir(prefix: str, keep: bool, run: Callable[[Path, list], int]) -> int:
    """``run(tmp, servers)`` in a fresh temporary folder; afterwards every server it appended to
    ``servers`` is stopped and the folder removed (kept with ``keep``, saying where)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    servers: list = []
    try:
        return run(tmp, servers)
    finally:
        for server in servers:
            server.stop()
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``th percentile of ``values`` (any order)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
