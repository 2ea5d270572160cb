"""Where a test run keeps its temporary folders.

The SQLite and YAML stores fsync every commit, as they must; on a disk that wait costs more than
the tests' own work. A RAM file system answers an fsync at once and holds the same files with the
same semantics (a process killed mid-write loses what it would lose on a disk), so a run puts its
temp folders on ``/dev/shm`` when that is a tmpfs with room to spare. pytest takes the root from
``PYTEST_DEBUG_TEMPROOT`` (listed by ``pytest -h``); a root the user chose (that variable,
``TMPDIR``, ``--basetemp``) wins.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

TEMP_ROOT_ENV = "PYTEST_DEBUG_TEMPROOT"
RAM_ROOT = "/dev/shm"
MIN_FREE_BYTES = 4 << 30  # a run writes well under 1 GB (the pyATS venv, the deploy image's files)


def _fs_type(path: str) -> Optional[str]:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            found = None
            for line in fh:
                fields = line.split()
                if len(fields) > 2 and fields[1] == path:
                    found = fields[2]  # the last mount on a point is the one in use
            return found
    except OSError:
        return None


def ram_temp_root(path: str = RAM_ROOT, min_free: int = MIN_FREE_BYTES) -> Optional[str]:
    """``path`` when it is a writable tmpfs with ``min_free`` bytes free, else None (a container's
    64 MB /dev/shm, a system without one: the default temp folder then)."""
    if _fs_type(path) != "tmpfs" or not os.access(path, os.W_OK | os.X_OK):
        return None
    st = os.statvfs(path)
    return path if st.f_bavail * st.f_frsize >= min_free else None


def run_folder(tmp_path_factory: pytest.TempPathFactory, config: pytest.Config) -> Path:
    """The run's temp folder. Under pytest-xdist each worker's folder is inside the run's
    (``<run>/popen-gw0``): that one, shared by the workers, is the run's."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


def pytest_configure(config: pytest.Config) -> None:
    """As a pytest plugin (tests/conftest.py): the run's temp folders in RAM, unless the user chose."""
    root = ram_temp_root()
    if root is not None and not ({"TMPDIR", TEMP_ROOT_ENV} & os.environ.keys()):
        os.environ[TEMP_ROOT_ENV] = root
