"""Secrets at rest (issue 16): every store file and side file, and the secret file, are created
0600 whatever the umask (tried under the usual 022), since they hold engine credentials and
password hashes."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from xpresso_env.testing.storage_suite import insert, make_engine, make_group, open_backend


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("backend,name", [("sqlite", "x.sqlite3"), ("yaml", "x.yaml")])
def test_a_new_store_and_its_side_files_are_private(tmp_path, umask_022, backend, name):
    folder = tmp_path / "var"
    store = open_backend({"storage": {"backend": backend, "path": str(folder / name)}})
    try:
        store.init()
        insert(store, make_group("alpha"), make_engine(1, api_token="secret123"))
        with store.read() as tx:
            assert tx.query("engine")
        modes = _modes(folder)
    finally:
        store.close()
    assert name in modes and len(modes) >= 2, modes  # the store, and its -wal/-shm or lock file
    assert modes == {n: 0o600 for n in modes}, modes


def test_an_existing_yaml_store_keeps_the_mode_its_owner_gave(tmp_path, umask_022):
    path = tmp_path / "x.yaml"
    store = open_backend({"storage": {"backend": "yaml", "path": str(path)}})
    try:
        store.init()
        os.chmod(path, 0o640)
        insert(store, make_group("alpha"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        store.close()


def test_init_makes_the_secret_and_the_store_private(tmp_path, umask_022):
    from tests.cli.test_cli import run

    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage: {backend: sqlite, path: data/db.sqlite3}\nauth: {secret_file: data/secret}\n")
    run(cfg, "init")
    modes = _modes(tmp_path / "data")
    assert {"db.sqlite3", "secret"} <= set(modes) and modes == {n: 0o600 for n in modes}, modes
