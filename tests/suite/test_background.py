"""Slow preparations started early (xpresso_env.testing.background), and shared by the processes
of one run (pytest-xdist workers)."""
from __future__ import annotations

import sys
from pathlib import Path

from xpresso_env.testing.background import Background


def _append(log: Path, word: str) -> list[list[str]]:
    return [[sys.executable, "-c", f"open({str(log)!r}, 'a').write({word!r})"]]


def test_a_shared_preparation_is_made_once_and_the_others_use_it(tmp_path: Path):
    log, made = tmp_path / "log", tmp_path / "made"
    first, second = Background(), Background()
    try:
        first.start("prep", _append(log, "first "), shared=made)
        second.start("prep", _append(log, "second "), shared=made)
        assert first.wait("prep", []).returncode == 0
        assert second.wait("prep", []).returncode == 0
    finally:
        first.stop()
        second.stop()
    assert log.read_text() in ("first ", "second ")  # whichever took the lock first; the other waited


def test_a_failed_shared_preparation_is_tried_again_by_the_next(tmp_path: Path):
    made = tmp_path / "made"
    failing, next_one = Background(), Background()
    try:
        assert failing.wait("prep", [[sys.executable, "-c", "raise SystemExit(3)"]], shared=made).returncode == 3
        assert next_one.wait("prep", _append(tmp_path / "log", "again"), shared=made).returncode == 0
    finally:
        failing.stop()
        next_one.stop()
    assert (tmp_path / "log").read_text() == "again"
