"""Build logs in storage (services/build_log.py): offsets, chunks, concurrent appenders from two
backend objects (as two processes would be), the follow loop, and logs of earlier versions kept
as files under images.logs_root. Runs on every selected backend."""
from __future__ import annotations

import threading
import uuid

import pytest

from xpresso_env.app import build_context
from xpresso_env.builds import log as build_log
from xpresso_env.builds.log import KIND, BuildLogStore, chunk_id


@pytest.fixture
def stores(settings, tmp_path):
    """Two stores on two backend objects of one storage (another process, as far as storage goes)."""
    ctxs = [build_context(settings, check_schema=False, images=False) for _ in range(2)]
    ctxs[0].storage.init()
    yield [BuildLogStore(ctx.storage, tmp_path / "legacy") for ctx in ctxs]
    for ctx in ctxs:
        ctx.close()


def chunks(store: BuildLogStore, image_id: str) -> list[dict]:
    out = []
    with store.storage.read() as tx:
        seq = 0
        while (doc := tx.get(KIND, chunk_id(image_id, seq))) is not None:
            out.append(doc.body)
            seq += 1
    return out


def test_offsets_limits_and_chunks(stores, monkeypatch):
    monkeypatch.setattr(build_log, "CHUNK_BYTES", 100)  # many chunks from little text
    store = stores[0]
    image = str(uuid.uuid4())
    assert store.read_from(image) == b"" and not store.exists(image)
    expected = b""
    for i in range(60):
        line = f"line {i} ünïcode {'x' * (i % 13)}\n"
        store.append(image, "g1", line)
        expected += line.encode()
    parts = chunks(store, image)
    assert len(parts) > 10 and parts[0]["offset"] == 0
    for a, b in zip(parts, parts[1:]):  # contiguous, and only the last chunk is below the size
        assert b["offset"] == a["offset"] + a["size"] and a["size"] >= 100
    assert store.read_from(image) == expected
    for offset in (0, 1, 99, 100, 101, 555, len(expected) - 1, len(expected), len(expected) + 5, 2 ** 70):
        assert stores[1].read_from(image, offset) == expected[offset:], offset
        assert stores[1].read_from(image, offset, 7) == expected[offset:offset + 7], offset


def test_two_processes_append_concurrently(stores):
    """Appenders on two backend objects never lose or reorder a line of their own, never overlap
    bytes, and the chunk chain stays contiguous."""
    image = str(uuid.uuid4())
    n = 40

    def run(store: BuildLogStore, who: str) -> None:
        for i in range(n):
            store.line(image, "g1", f"{who} {i}")

    threads = [threading.Thread(target=run, args=(s, f"w{k}")) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = stores[0].read_from(image).decode()
    lines = [line.split(" ", 1)[1] for line in text.splitlines()]
    assert len(lines) == 2 * n
    for who in ("w0", "w1"):
        assert [line for line in lines if line.startswith(who + " ")] == [f"{who} {i}" for i in range(n)]
    parts = chunks(stores[1], image)
    assert sum(p["size"] for p in parts) == len(text.encode())


def test_build_log_writer_buffers_and_flushes_on_close(stores):
    image = str(uuid.uuid4())
    writer = stores[0].writer(image, "g1", flush_s=3600)  # no timed flush during this test
    writer("first\nsecond")
    writer("third")
    writer.close()
    text = stores[1].read_from(image).decode()
    assert [line.split(" ", 1)[1] for line in text.splitlines()] == ["first", "second", "third"]
    writer("after close")  # ignored, never raises
    assert stores[1].read_from(image).decode() == text


def test_follow_sees_what_another_process_appends(stores):
    image = str(uuid.uuid4())
    stores[0].line(image, "g1", "one")
    running = threading.Event()
    running.set()
    got: list[bytes] = []
    stream = stores[1].follow(image, 0, running.is_set, lambda: False, poll_s=0.01, status_every_s=0.01)
    got.append(next(stream))
    assert got[0].endswith(b" one\n")
    stores[0].line(image, "g1", "two")
    got.append(next(stream))  # blocks until the other store's append is visible
    running.clear()
    stores[0].line(image, "g1", "three")  # written before the end is noticed: still sent
    got.extend(stream)
    assert [line.split(b" ", 1)[1] for line in b"".join(got).splitlines()] == [b"one", b"two", b"three"]
    # followed from an offset in the middle
    whole = stores[0].read_from(image)
    assert b"".join(stores[1].follow(image, 5, lambda: False, lambda: False, poll_s=0.01)) == whole[5:]


def test_log_file_of_an_earlier_version_is_read_then_carried_into_storage(stores, tmp_path):
    image = str(uuid.uuid4())
    legacy = tmp_path / "legacy" / f"{image}.log"
    legacy.parent.mkdir(parents=True)
    old = "2024-05-02T09:14:03.112233Z queued: pölaris\n".encode()
    legacy.write_bytes(old)
    assert stores[0].exists(image) and stores[0].read_from(image) == old
    assert stores[0].read_from(image, 3) == old[3:]
    assert b"".join(stores[0].follow(image, 0, lambda: False, lambda: False, poll_s=0.01)) == old
    stores[1].line(image, "g1", "cancelled by alice")  # the first append copies the file in first
    legacy.unlink()  # from now on storage alone holds the log
    text = stores[0].read_from(image)
    assert text.startswith(old) and text.endswith(b" cancelled by alice\n")


def test_replace_log_makes_the_log_exactly_that(stores, monkeypatch):
    monkeypatch.setattr(build_log, "CHUNK_BYTES", 50)
    image = str(uuid.uuid4())
    for i in range(20):
        stores[0].line(image, "g1", f"a longer log, line {i}")
    new = b"short\nlog\n"
    with stores[0].storage.write() as tx:
        stores[0].replace_log(tx, image, "g1", new)
    assert stores[1].read_from(image) == new
    assert stores[1].read_from(image, 6) == b"log\n"
    stores[1].line(image, "g1", "appended")
    assert stores[0].read_from(image).startswith(new) and stores[0].read_from(image).endswith(b"appended\n")
