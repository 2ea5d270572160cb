"""The suite's checks across processes: races, visibility, durability after a SIGKILL."""
from __future__ import annotations

import json
import os
import signal

import pytest

from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.errors import NameConflict
from xpresso_env.storage import change_counters, check_ready

from .children import read_lines, spawn_child, stream_record
from .records import ids, insert, make_harness, make_image, uid, versions
from .suite import StorageConformance


class ProcessConformance(StorageConformance):
    """The store opened by other processes too (see the package docstring); needs ``backend_spec``."""

    PROCESS_INCREMENTS = 40
    PROCESS_NAMES = 20
    DURABILITY_ACKS = 25  # acknowledged writes before the SIGKILL

    def test_two_processes_lose_no_update_and_break_no_uniqueness(self, backend, backend_spec):
        counter = make_image(1, group="race")
        insert(backend, counter)
        names = [f"p-{k}" for k in range(self.PROCESS_NAMES)]
        procs = [spawn_child("hammer", backend_spec,
                             {"worker": w, "counter": str(counter.id), "increments": self.PROCESS_INCREMENTS,
                              "names": names}) for w in range(2)]
        try:
            for p in procs:
                assert read_lines(p, lambda lines: bool(lines), self.CHILD_TIMEOUT_S) == ["ready"], \
                    p.stderr.read() if p.poll() is not None else "no ready line"
            for p in procs:  # release both at once
                p.stdin.write("go\n")
                p.stdin.flush()
            results = []
            for p in procs:
                out, err = p.communicate(timeout=self.CHILD_TIMEOUT_S)
                assert p.returncode == 0, err
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        won = sorted(n for r in results for n in r["won"])
        assert won == sorted(names)  # every name won exactly once
        assert sum(r["conflicts"] for r in results) == len(names)
        with backend.read() as tx:
            assert from_doc(tx.get("image", str(counter.id))).attempts == 2 * self.PROCESS_INCREMENTS
            live = tx.query("harness", "race", include_deleted=False)
            assert sorted(d.name for d in live) == sorted(names)


    def test_another_process_commit_is_seen(self, backend, backend_spec):
        counts = change_counters(backend) is not None
        key = [("harness", "beta")]
        seen = versions(backend, key) if counts else ()
        with backend.read() as tx:  # warm whatever the backend object caches
            assert tx.query("harness", "beta") == []
        proc = spawn_child("insert", backend_spec, {"n": 7, "group": "beta"})
        out, err = proc.communicate(timeout=self.CHILD_TIMEOUT_S)
        assert proc.returncode == 0 and out.strip() == "committed", err
        with backend.read() as tx:
            assert ids(tx.query("harness", "beta")) == [str(uid(7))]
        if counts:  # and the counters moved with the data
            assert versions(backend, key) > seen


    # -- durability ------------------------------------------------------------------------------

    def test_sigkill_mid_stream_keeps_every_acknowledged_write(self, backend, backend_spec, make_backend):
        backend.close()  # only the child touches the store while it runs
        proc = spawn_child("stream", backend_spec, {})
        try:
            acked = read_lines(proc, lambda lines: len(lines) >= self.DURABILITY_ACKS, self.CHILD_TIMEOUT_S)
            assert len(acked) >= self.DURABILITY_ACKS, proc.stderr.read() if proc.poll() is not None else ""
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(self.CHILD_TIMEOUT_S)
            # Lines already in the pipe were acknowledged before the kill.
            acked += read_lines(proc, lambda lines: False, self.CHILD_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        acked_i = [int(line) for line in acked]
        assert acked_i == list(range(len(acked_i)))

        reopened = make_backend()
        check_ready(reopened)
        with reopened.read() as tx:
            for i in acked_i:
                assert tx.get("harness", str(stream_record(i).id)) == to_doc(stream_record(i)), i
            found = tx.query("harness")
        # At most the one write in flight at the kill may have committed without its line.
        assert [from_doc(d) for d in found] == [stream_record(i) for i in range(len(found))]
        assert len(acked_i) <= len(found) <= len(acked_i) + 1
        # The store is not left locked or damaged: it takes writes and keeps its constraints.
        insert(reopened, make_harness(1, group="g0", name="after"))
        with pytest.raises(NameConflict):
            insert(reopened, make_harness(2, group="g0", name="stream-0"))
        with reopened.read() as tx:
            assert tx.find_name("harness", "g0", "after").id == str(uid(1))
