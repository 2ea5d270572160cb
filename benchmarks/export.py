"""`xpresso-env export` on a big store: peak RSS and seconds of the export process (CONTRACT §16).

For each backend a store is filled by direct bulk insert (SQLite ``executemany``, PostgreSQL
``COPY``; the documents are what the journal writes: webhook deliveries and history rows, plus a
group, a webhook and its queue), then ``xpresso-env --config ... export FILE`` runs as a child
process, without and with ``--with-deliveries``. Its peak RSS is the child's own high-water mark
(``VmHWM``, read by the child as it exits), so the benchmark's memory does not count. ``floor`` is
the peak of ``xpresso-env group list`` on the same store: what any command of the CLI takes.

    python benchmarks/export.py                              # 1,000,000 deliveries + 100,000 history
    python benchmarks/export.py --deliveries 20000 --history 2000 --backends sqlite
    python benchmarks/export.py --deliveries 50000 --history 5000 --runs 2 --baseline bca6d7c
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from _common import BASE_TIME, backend_settings, postgres_database, write_config

from xpresso_env.app import build_context
from xpresso_env.core.timeutil import format_time
from xpresso_env.journal.journal import (
    DELIVERY_KIND,
    HISTORY_KIND,
    QUEUE_KIND,
    WEBHOOK_KIND,
)

GROUP = "bench"
WEBHOOK = str(uuid.UUID(int=1))


def _rows(deliveries: int, history: int) -> Iterator[tuple]:
    """(kind, id, grp, name, deleted, created, body JSON) of every document to insert."""
    at = format_time(BASE_TIME)
    yield ("group", GROUP, None, None, False, at, json.dumps({"name": GROUP, "date_created": at}))
    yield (WEBHOOK_KIND, WEBHOOK, GROUP, None, False, at, json.dumps({
        "id": WEBHOOK, "group": GROUP, "url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": "s" * 32,
        "active": True, "created_by": "bench", "date_created": at, "date_modified": at, "deleted": False}))
    yield (QUEUE_KIND, WEBHOOK, None, None, False, at, json.dumps({"webhook_id": WEBHOOK, "head": 0, "tail": 0}))
    record = str(uuid.UUID(int=2))
    for i in range(history):
        yield (HISTORY_KIND, f"{i:020d}-000000-00000000", record, None, False, at, json.dumps({
            "record_id": record, "kind": "harness", "group": GROUP, "event": "updated", "at": at, "by": "bench",
            "changes": {"path": [f"/opt/h/{i}", f"/opt/h/{i + 1}"], "site": ["OTT", "SJC"]}}))
    for i in range(deliveries):
        did = str(uuid.UUID(int=10**9 + i))
        yield (DELIVERY_KIND, did, WEBHOOK, None, False, at, json.dumps({
            "id": did, "webhook_id": WEBHOOK, "event": "harness.updated", "at": at, "group": GROUP,
            "data": {"event": "harness.updated", "record": {"id": record, "name": f"harness-{i}", "path": "/opt/h",
                                                            "operational_state": "UNKNOWN"},
                     "changes": {"path": ["/opt/a", "/opt/b"]}},
            "status": "delivered", "attempts": 1, "last_status_code": 200, "last_error": None,
            "date_created": at, "date_delivered": at, "seq": f"{i:020d}-000000-00000000", "outbox_id": f"{WEBHOOK}:{i:012d}"}))


def fill_sqlite(path: Path, deliveries: int, history: int) -> None:
    conn = sqlite3.connect(str(path))
    with conn:
        conn.executemany("INSERT INTO docs (kind, id, grp, name, deleted, created, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         ((k, i, g, n, int(d), c, b) for k, i, g, n, d, c, b in _rows(deliveries, history)))
    conn.close()


def fill_postgres(dsn: str, deliveries: int, history: int) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY xpresso_docs (kind, id, grp, name, deleted, created, body) FROM STDIN") as copy:
            for row in _rows(deliveries, history):
                copy.write_row(row)
        cur.execute("ANALYZE xpresso_docs")


# The child reports its own peak: VmHWM, the high-water RSS of the process's memory since its exec.
# ru_maxrss (wait4, RUSAGE_CHILDREN) would not do: Linux starts a child's ru_maxrss at its parent's
# RSS at fork time, so every child would show at least this benchmark's own size.
_PEAK = ("import atexit, sys\n"
         "atexit.register(lambda: sys.stderr.write('\\n' + next(line for line in open('/proc/self/status') "
         "if line.startswith('VmHWM'))))\n")
_CLI = _PEAK + "import runpy\nsys.argv[0] = 'xpresso-env'\nrunpy.run_module('xpresso_env', run_name='__main__')\n"


def run_child(config: Path, *args: str, command: list[str] | None = None) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, stdout) of one `xpresso-env` command (or of ``command``)."""
    started = time.perf_counter()
    argv = [*command, str(config), *args[1:]] if command else [sys.executable, "-c", _CLI, "--config",
                                                                str(config), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr}")
    kb = int(proc.stderr.strip().splitlines()[-1].split()[1])  # "VmHWM:   51234 kB"
    return kb / 1024, seconds, proc.stdout


_BASELINE = """
import sys
from xpresso_env.app import Role, build_context
from xpresso_env.builds.files import ImagePaths
from xpresso_env.config import load_settings
import baseline_transfer
settings = load_settings(sys.argv[1])
ctx = build_context(settings, role=Role.ADMIN, images=False)
print(baseline_transfer.export_file(ctx.storage, sys.argv[2], ctx.clock, ImagePaths.from_settings(settings)))
ctx.close()
"""


def baseline_child(commit: str, tmp: Path) -> list[str]:
    """The command that runs the export of ``commit`` (the version before streaming) in a child."""
    folder = tmp / "baseline"
    folder.mkdir()
    source = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "show",
                             f"{commit}:xpresso_env/admin/transfer.py"], check=True, capture_output=True, text=True).stdout
    (folder / "baseline_transfer.py").write_text(source.replace("from ..", "from xpresso_env."), encoding="utf-8")
    return [sys.executable, "-c", _PEAK + f"sys.path.insert(0, {str(folder)!r})\n" + _BASELINE]


def bench(backend: str, args: argparse.Namespace, tmp: Path, stack: ExitStack) -> list[str]:
    dsn: str | None = stack.enter_context(postgres_database()) if backend == "postgres" else None
    settings = backend_settings(tmp, backend, dsn)
    ctx = build_context(settings, check_schema=False, images=False)
    ctx.storage.init()
    ctx.close()
    started = time.perf_counter()
    if backend == "sqlite":
        fill_sqlite(Path(settings.storage.path), args.deliveries, args.history)
    else:
        fill_postgres(dsn, args.deliveries, args.history)  # type: ignore[arg-type]
    fill_s = time.perf_counter() - started
    config = write_config(tmp / "config.yaml", settings)
    rows = args.deliveries + args.history + 3
    lines = [(f"{backend}: {rows:,} rows ({args.deliveries:,} deliveries, {args.history:,} history) "
              f"filled in {fill_s:.0f} s")]
    floor, _, _ = run_child(config, "group", "list")
    lines.append(f"  floor (group list)     peak RSS {floor:6.1f} MB")
    variants = [("export (default)", [], None), ("export --with-deliveries", ["--with-deliveries"], None)]
    if args.baseline:  # paired with the streaming export of the same rows: new, old, new, old
        variants = [variants[1], (f"export of {args.baseline}", [], baseline_child(args.baseline, tmp))]
    for run in range(args.runs):
        for label, flag, command in variants:
            file = tmp / "export.yaml"
            rss, seconds, _ = run_child(config, "export", str(file), *flag, command=command)
            size = file.stat().st_size / 2**20
            mode = oct(file.stat().st_mode & 0o777)
            lines.append(f"  {label:24s} peak RSS {rss:7.1f} MB  {seconds:7.1f} s  file {size:7.1f} MB {mode}  "
                         f"run {run + 1}")
            print(lines[-1], flush=True)
            file.unlink()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--baseline", metavar="COMMIT",
                        help="pair the export with --with-deliveries with the export of COMMIT (e.g. bca6d7c, "
                             "the version before streaming; it holds the whole store: use a small store)")
    args = parser.parse_args(argv)
    report = []
    for backend in args.backends.split(","):
        with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="xpresso-export-bench-") as tmp:
            report += bench(backend, args, Path(tmp), stack)
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
