"""Compiled bytecode for the Python processes a test run starts.

The tests start hundreds of Python processes (the CLI, servers, workers, the client). With
``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__`` beside the sources, each one compiles every
module of the project again, about a third of a short command's CPU time. A run that finds that
variable set keeps the bytecode in pytest's cache folder instead (``PYTHONPYCACHEPREFIX``): still
nothing is written beside the sources, and the processes it starts reuse it. A prefix the user
chose wins.
"""
from __future__ import annotations

import os

import pytest

NO_BYTECODE_ENV = "PYTHONDONTWRITEBYTECODE"
PREFIX_ENV = "PYTHONPYCACHEPREFIX"


@pytest.hookimpl(trylast=True)  # after the cache provider's: config.cache
def pytest_configure(config: pytest.Config) -> None:
    """As a pytest plugin (tests/conftest.py). Before pytest-xdist starts its workers, so they and
    everything they start inherit it."""
    cache = getattr(config, "cache", None)
    if cache is None or not os.environ.get(NO_BYTECODE_ENV) or PREFIX_ENV in os.environ:
        return
    os.environ[PREFIX_ENV] = str(cache.mkdir("pycache"))
    del os.environ[NO_BYTECODE_ENV]
