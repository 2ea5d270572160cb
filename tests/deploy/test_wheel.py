"""`pip install .` from a clean checkout ships what an installed (non-editable) server and client
need: the web page's files (xpresso_env/ui/, Swagger UI included) and both console scripts.

The shared install here is editable (it reads the source tree), so it would hide a file missing
from setup.py's package_data. This test builds the wheel for real with ``pip wheel`` from a copy
of the files git tracks (what a clean checkout holds, nothing left over from a build), looks inside
it, installs it into a new virtual environment and runs it from there.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from xpresso_env.http.resources import ui as api_ui

pytestmark = pytest.mark.slow  # pip wheel and a venv

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    checkout = base / "checkout"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not in a checkout either
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    # --use-pep517: built in an isolated environment, as a newer pip always does; an older one (23.0,
    # Debian's in a new venv) would otherwise run setup.py bdist_wheel where `wheel` is missing.
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                          "--use-pep517", "--quiet", str(checkout), "-w", str(base / "dist")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"pip wheel failed:\n{res.stdout}\n{res.stderr}"
    (path,) = (base / "dist").glob("xpresso_env-*.whl")
    return path


def test_the_wheel_holds_the_page_and_both_console_scripts(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = configparser.ConfigParser()
        scripts.read_string(zf.read(entry_points).decode())
    for asset in [api_ui.PAGE, *api_ui.FILES.values()]:
        assert f"xpresso_env/ui/{asset.path}" in names, asset.path
    # Swagger UI's licence travels with its code
    assert "xpresso_env/ui/swagger-ui/LICENSE" in names
    assert "xpresso_env/client/main.py" in names and "xpresso_env/http/resources/ui.py" in names
    assert dict(scripts["console_scripts"]) == {"xpresso-env": "xpresso_env.cli:main",
                                                "xpresso": "xpresso_env.client.main:main"}


def _site_folders() -> list[str]:
    """The folders the running interpreter imports installed packages from: its venv's own when it
    runs in one (a new venv's ``--system-site-packages`` would give the base interpreter's
    instead), the system's, the user's."""
    import site

    found = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else []),
             *(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages"))]
    return [p for p in dict.fromkeys(found) if Path(p).is_dir()]


def test_installed_from_the_wheel_the_client_runs_and_the_page_reads_its_files(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    # Nothing ahead of the wheel's copy: not PYTHONPATH, not the working folder (`python -m` puts it
    # on the path; a source tree's xpresso_env.egg-info there makes pip skip the install).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                          "--disable-pip-version-check", "--quiet", str(wheel)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (venv / "bin" / "xpresso").exists(), res.stdout
    # The dependencies come from the environment running the tests (no index needed), whether
    # that is the system's Python or a venv: its site folders go at the END of the new venv's
    # path (a .pth file's lines are appended after the folder holding it), so xpresso_env is
    # imported from the wheel's install, and the source tree's editable install is not seen.
    (inner_site,) = venv.glob("lib/python3*/site-packages")
    (inner_site / "zz-tests-dependencies.pth").write_text("".join(f"{p}\n" for p in _site_folders()))
    out = subprocess.run([str(venv / "bin" / "xpresso"), "--version"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0 and out.stdout.startswith("xpresso "), out.stderr
    out = subprocess.run([str(venv / "bin" / "xpresso-env"), "--version"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    check = ("import xpresso_env, sys\n"
             "from xpresso_env.http.resources import ui\n"
             "assets = ui.Assets()\n"
             "sizes = [len(assets.read(a)) for a in [ui.PAGE, *ui.FILES.values()]]\n"
             "print(xpresso_env.__file__, min(sizes))\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    where, smallest = out.stdout.split()
    assert where.startswith(str(venv)), where  # the wheel's copy, not the source tree
    assert int(smallest) > 100
