"""YAML backend start-up: build a file of 10,000 harnesses over 200 groups, then time the first
load of a fresh backend object (what `xpresso-env serve` does at start-up):

* as the backend writes the file: its strict line reader reads it;
* after a hand edit outside the subset that reader knows (here: a trailing comment), so that
  PyYAML (with libyaml when available) parses the whole file.

It also times, at that size, a write transaction of one record (the whole file is rewritten and
fsynced), another backend object's first read after it (a reload), and a warm list of one group.

    python benchmarks/yaml_startup.py [--groups 200] [--per-group 50] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from _common import seed_harnesses  # noqa: E402
from xpresso_env_plugins.storage_yaml import YamlStorage  # noqa: E402

from xpresso_env.core.codec import from_doc, to_doc  # noqa: E402


def first_load(path: Path) -> tuple[float, int]:
    """Seconds for a fresh object's first transaction (load included), and the harnesses it sees."""
    backend = YamlStorage(path)
    started = time.perf_counter()
    with backend.read() as tx:
        group = tx.query("harness", "group-000")
    seconds = time.perf_counter() - started
    with backend.read() as tx:
        n = len(tx.query("harness"))
    backend.close()
    assert group, "group-000 has harnesses"
    return seconds, n


def best_of(runs: int, fn) -> float:
    return min(fn() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--per-group", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xpresso-yaml-bench-") as tmp:
        path = Path(tmp) / "xpresso.yaml"
        seed_backend = YamlStorage(path)
        seed_backend.init()
        seeded = seed_harnesses(seed_backend, n_groups=args.groups, per_group=args.per_group)
        size_mb = path.stat().st_size / 1e6
        print(f"libyaml: {yaml.__with_libyaml__}; file: {seeded.count} harnesses over {len(seeded.groups)} "
              f"groups, {size_mb:.1f} MB; seeded in {seeded.seconds:.2f} s ({seeded.transactions} transactions)")

        def line_reader() -> float:
            seconds, n = first_load(path)
            assert n == seeded.count
            return seconds

        print(f"first load (start-up), line reader:  {best_of(args.runs, line_reader) * 1000:7.0f} ms")
        original = path.read_bytes()
        edited = original.replace(b"  bldg: ALL\n", b"  bldg: ALL  # edited by hand\n", 1)
        assert edited != original
        path.write_bytes(edited)
        print(f"first load after a hand edit, PyYAML:{best_of(args.runs, line_reader) * 1000:7.0f} ms")
        path.write_bytes(original)

        # One write at this size, and what another object pays to see it.
        group, hid = seeded.groups[0], seeded.ids[seeded.groups[0]][0]
        times = []
        backend = YamlStorage(path)  # a fresh object: the file was rewritten above
        other = YamlStorage(path)
        with other.read():
            pass
        reloads = []
        for k in range(5):
            started = time.perf_counter()
            with backend.write() as tx:
                h = from_doc(tx.get("harness", hid, lock=True))
                tx.update(to_doc(h.__class__(**{**h.__dict__, "site": f"S{k}"})))
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            with other.read() as tx:
                assert tx.get("harness", hid).body["site"] == f"S{k}"
            reloads.append(time.perf_counter() - started)
        print(f"write transaction of one record:     {statistics.median(times) * 1000:7.0f} ms (median of 5; "
              f"the whole file is rewritten and fsynced)")
        print(f"another object's read after it:      {statistics.median(reloads) * 1000:7.0f} ms (reload)")
        lists = []
        for _ in range(200):
            started = time.perf_counter()
            with other.read() as tx:
                tx.query("harness", group)
            lists.append(time.perf_counter() - started)
        print(f"list of one group (50), warm:        {statistics.median(lists) * 1e6:7.0f} us (median of 200)")
        backend.close()
        other.close()
        seed_backend.close()
        print(f"files: {sorted(os.listdir(tmp))}")


if __name__ == "__main__":
    main()
