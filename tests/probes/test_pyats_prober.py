"""The pyats-files prober on a REAL pyATS installation (pip-installed once per test run) and on
hand-made layouts: old, too old, broken, and hostile ones (a symbolic-link loop, a FIFO, links
that lead out of the installation)."""
from __future__ import annotations

import os
from pathlib import Path

from xpresso_env_plugins.prober_pyats import PyatsProber

from tests.probes.conftest import fake_install
from xpresso_env.probes.protocol import ProbeTarget


def probe(path, harness: str = "pyATS", timeout_s: float = 5.0):
    return PyatsProber().probe(ProbeTarget(kind="harness", type=harness, record={"path": str(path)},
                                           timeout_s=timeout_s))


def test_a_real_pyats_installation_is_online_with_its_version(pyats_venv: Path):
    dist = sorted(p.name for p in pyats_venv.glob("lib/python3*/site-packages/pyats-*.dist-info"))
    assert len(dist) == 1
    version = dist[0][len("pyats-"):-len(".dist-info")]
    result = probe(pyats_venv)
    assert (result.ok, result.detail, result.version) == (True, f"pyATS {version}", version)
    assert result.fields == {"support_liveview": True}  # any pyATS of today is >= 20.12
    assert os.path.islink(pyats_venv / "bin" / "python")  # a venv's interpreter link is accepted


def test_a_version_before_19_5_is_too_old(tmp_path):
    result = probe(fake_install(tmp_path / "old", "19.0"))
    assert (result.ok, result.detail, result.version) == (False, "pyATS 19.0 is older than 19.5", "19.0")


def test_20_1_is_online_without_liveview(tmp_path):
    result = probe(fake_install(tmp_path / "p", "20.1"))
    assert (result.ok, result.detail, result.fields) == (True, "pyATS 20.1", {"support_liveview": False})


def test_liveview_starts_at_20_12(tmp_path):
    assert probe(fake_install(tmp_path / "p", "20.12")).fields == {"support_liveview": True}


def test_a_broken_version_and_a_missing_pyats(tmp_path):
    assert probe(fake_install(tmp_path / "b", "unknown")).detail == \
        "broken pyATS installation: no version in pyats-unknown.dist-info"
    assert probe(fake_install(tmp_path / "n", None)).detail == \
        "pyATS is not installed (no pyats-*.dist-info in site-packages)"


def test_missing_parts(tmp_path):
    assert probe(tmp_path / "nowhere").detail == f"{tmp_path / 'nowhere'}: does not exist"
    (tmp_path / "empty").mkdir()
    assert probe(tmp_path / "empty").detail == "no bin/ folder in the installation"
    root = fake_install(tmp_path / "noexec", "24.3")
    (root / "bin" / "python").chmod(0o644)
    assert probe(root).detail == "bin/python is not executable"
    root = fake_install(tmp_path / "nosite", "24.3", pyver="python2.7")
    assert probe(root).detail == "no lib/python3*/site-packages folder in the installation"


def test_a_symlink_loop_is_a_failure_that_says_so(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    assert probe(loop).detail == f"{loop}: symbolic link loop"
    root = fake_install(tmp_path / "p", "24.3", python="none")
    os.symlink(root / "bin" / "python", root / "bin" / "python")
    assert probe(root).detail == "bin/python: symbolic link loop"


def test_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert probe(fifo).detail == f"{fifo} is not a folder"
    root = fake_install(tmp_path / "p", "24.3", python="none")
    os.mkfifo(root / "bin" / "python")
    assert probe(root).detail == "bin/python is not a regular file"
    root = fake_install(tmp_path / "q", None)
    os.mkfifo(root / "lib" / "python3.11" / "site-packages" / "pyats-24.3.dist-info")
    assert probe(root).detail == "pyATS is not installed (no pyats-*.dist-info in site-packages)"


def test_links_out_of_the_installation_are_not_followed(tmp_path):
    elsewhere = fake_install(tmp_path / "elsewhere", "24.3")
    root = fake_install(tmp_path / "p", None)
    site = root / "lib" / "python3.11" / "site-packages"
    os.symlink(elsewhere / "lib" / "python3.11" / "site-packages" / "pyats-24.3.dist-info",
               site / "pyats-24.3.dist-info")
    assert not probe(root).ok
    root2 = tmp_path / "p2"
    (root2 / "bin").mkdir(parents=True)
    os.symlink(elsewhere / "bin" / "python", root2 / "bin" / "python")
    os.symlink(elsewhere / "lib", root2 / "lib")
    assert probe(root2).detail == "no lib/ folder in the installation"
    # the given path itself may be a link (sites mount installations under aliases)
    alias = tmp_path / "alias"
    os.symlink(elsewhere, alias)
    assert probe(alias).detail == "pyATS 24.3"


def test_tcl_ats_needs_an_existing_folder(tmp_path):
    assert probe(tmp_path, harness="Tcl-ATS").ok
    assert probe(tmp_path / "nowhere", harness="Tcl-ATS").detail == f"{tmp_path / 'nowhere'}: does not exist"
