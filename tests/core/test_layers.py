"""The layers and the plugin SDK, as written in `.importlinter`, hold for the code as it is."""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"


def test_every_import_linter_contract_is_kept():
    # In a process of its own: import-linter configures logging as a command does, which would
    # silence the loggers of the tests that run after it.
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(" \
           f"config_filename={str(CONFIG)!r}, no_cache=True, no_logo=True))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_room_is_in_the_layers_contract():
    """A new folder of the package must be placed in the layers, not left unchecked."""
    config = configparser.ConfigParser()
    config.read(CONFIG)
    layers = config["importlinter:contract:layers"]["layers"]
    named = {part.strip() for line in layers.split("\n") for part in line.replace(":", "|").split("|") if part.strip()}
    rooms = {f"xpresso_env.{p.name}" for p in (ROOT / "xpresso_env").iterdir()
             if p.is_dir() and (p / "__init__.py").exists()}
    # the client (its own contract) and the shipped test helpers stand outside the layers
    assert rooms - named - {"xpresso_env.client", "xpresso_env.testing"} == set()
