"""The suite's child processes: they open the test's store from its spec and print one line per
acknowledged (committed) write, so the parent knows what must survive."""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from xpresso_env.core.codec import to_doc
from xpresso_env.core.errors import NameConflict
from xpresso_env.core.models import Harness
from xpresso_env.storage import StorageBackend

from .records import increment_attempts, insert, make_harness, open_backend


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import what the parent imports (a plugin module living next to the tests).
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn_child(task: str, spec: dict[str, Any], params: dict[str, Any]) -> subprocess.Popen:
    code = "import sys; from xpresso_env.testing.storage_suite.children import child_main; child_main(sys.argv[1:])"
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


def read_lines(proc: subprocess.Popen, until: Callable[[list[str]], bool], timeout: float) -> list[str]:
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
