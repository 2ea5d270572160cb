"""What only the YAML backend promises: a file people read and edit, hand edits picked up, a
broken file refused without losing the last good data, atomic rewrites, a safe file lock, and a
fast line reader that never reads the file differently from PyYAML."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from xpresso_env_plugins.storage_yaml import YamlStorage, subset
from xpresso_env_plugins.storage_yaml import format as fmt

from xpresso_env.config import load_settings
from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.errors import SchemaOutdated, StorageError, StorageUnavailable
from xpresso_env.plugin import make_plugin_manager, pick_storage
from xpresso_env.storage import Doc
from xpresso_env.testing.storage_suite import (
    insert,
    make_group,
    make_harness,
    make_image,
    make_user,
    sample_records,
    uid,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "xpresso.yaml"


@pytest.fixture
def store(path: Path):
    backend = YamlStorage(path, busy_timeout_s=5.0)
    backend.init()
    yield backend
    backend.close()


def hand_edit(path: Path, old: str, new: str) -> None:
    """Change the file in place, as `echo >` or a simple editor would (no lock, no rename)."""
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def harness_name(backend: YamlStorage, n: int) -> str:
    with backend.read() as tx:
        return tx.get("harness", str(uid(n))).name


# -- the plugin ------------------------------------------------------------------------------

def test_registered_and_placed_by_settings(tmp_path):
    info = pick_storage(make_plugin_manager(load_entry_points=False), "yaml")
    assert info.name == "yaml" and "YAML" in info.description
    settings = load_settings(env={}, overrides={"storage": {"backend": "yaml"}})
    assert info.factory(settings).path == settings.storage_path("xpresso.yaml")
    explicit = load_settings(env={}, overrides={"storage": {"backend": "yaml", "path": str(tmp_path / "x.yaml")}})
    assert info.factory(explicit).path == tmp_path / "x.yaml"


def test_missing_file_is_version_0_and_nothing_is_created(path):
    backend = YamlStorage(path)
    assert backend.current_version() == 0
    with pytest.raises(SchemaOutdated):
        with backend.read():
            pass
    with pytest.raises(SchemaOutdated):
        with backend.write():
            pass
    assert not path.parent.exists()
    assert backend.init() == 3 and path.exists()  # init makes the folder and the file
    assert yaml.safe_load(path.read_text())["schema_version"] == 3


# -- a file people read and edit -------------------------------------------------------------

def test_the_file_is_plain_yaml_a_person_can_read(store, path):
    insert(store, make_group("alpha"), make_user("carol", roles={"alpha": "member"}),
           make_harness(1, created=1), make_image(2, groups=("beta",), created=2, meta={"timings": {"total_s": 1.5}}))
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert list(data) == ["schema_version", "groups", "users", "revocations", "harnesses", "engines", "images"]
    assert data["schema_version"] == 3 and data["revocations"] == [] and data["engines"] == []
    assert data["groups"] == [{"name": "alpha", "date_created": "2024-03-04T05:06:07.123456Z"}]
    assert data["users"][0]["roles"] == {"alpha": "member"}
    # A record is exactly its API body: no storage columns mixed in.
    assert data["harnesses"] == [to_doc(make_harness(1, created=1)).body]
    assert data["images"][0]["groups"] == ["beta"] and "_index" not in data["images"][0]
    # One field per line, the way a person writes YAML.
    assert "harnesses:\n- id: 00000000-0000-0000-0000-000000000001\n  group: alpha\n  name: harness-1\n" in text
    assert "  roles: {alpha: member}\n" in text
    assert "  meta: {timings: {total_s: 1.5}}\n" in text
    assert text.startswith("# xpresso-env data")


def test_rewriting_the_same_data_gives_the_same_bytes(store, path):
    insert(store, *sample_records().values())
    first = path.read_bytes()
    other = YamlStorage(path)
    with other.write() as tx:  # rewrite everything from a fresh load
        h = tx.get("harness", str(uid(1)))
        tx.update(h)
    assert path.read_bytes() == first
    other.close()


def test_every_sample_record_is_written_in_the_fast_subset(store, path):
    insert(store, *sample_records().values())
    text = path.read_text(encoding="utf-8")
    fast = subset.read_subset(text)
    assert fast is not None
    assert fast == yaml.load(text, Loader=fmt.Loader)


def test_hand_edit_is_picked_up_on_the_next_request(store, path):
    insert(store, make_harness(1, name="before"))
    assert harness_name(store, 1) == "before"
    hand_edit(path, "name: before", "name: after-a-hand-edit")
    assert harness_name(store, 1) == "after-a-hand-edit"
    with store.read() as tx:
        assert tx.find_name("harness", "alpha", "after-a-hand-edit").id == str(uid(1))
        assert tx.find_name("harness", "alpha", "before") is None
    # A record added by hand, with a time written the way people write times.
    hand_edit(path, "engines: []\n", "engines:\n- id: e-by-hand\n  group: alpha\n  name: jenkins\n"
                                     "  date_created: 2024-05-01 10:00:00\n")
    with store.read() as tx:
        (engine,) = tx.query("engine", "alpha")
    assert engine.id == "e-by-hand" and engine.name == "jenkins"
    assert engine.created == "2024-05-01T10:00:00.000000Z"
    # The edit is kept by the next write.
    insert(store, make_harness(2, name="second"))
    with YamlStorage(path).read() as tx:
        assert tx.get("engine", "e-by-hand").name == "jenkins"
        assert tx.get("harness", str(uid(1))).name == "after-a-hand-edit"


def test_edit_by_rename_with_the_same_size_is_picked_up(store, path):
    insert(store, make_harness(1, name="aaaa"))
    assert harness_name(store, 1) == "aaaa"
    text = path.read_text().replace("name: aaaa", "name: bbbb")
    tmp = path.with_name("edited.yaml")
    tmp.write_text(text)
    os.replace(tmp, path)  # what most editors do on save
    assert harness_name(store, 1) == "bbbb"


def test_any_yaml_style_written_by_hand_is_read(store, path):
    """Flow style, comments, quoting: outside the fast reader's subset, PyYAML reads it."""
    path.write_text(
        "# my fixtures\n"
        "schema_version: 2\n"
        "groups: [{name: alpha, date_created: '2024-01-01T00:00:00.000000Z'}]  # one group\n"
        "harnesses:\n"
        "  - {id: h1, group: alpha, name: \"smoke\", deleted: no, date_created: 2024-01-02T00:00:00Z}\n"
        "  - id: h2\n"
        "    group: alpha\n"
        "    name: >-\n"
        "      folded\n"
        "      name\n"
        "    date_created: '2024-01-03T00:00:00.000000Z'\n")
    assert subset.read_subset(path.read_text()) is None
    with store.read() as tx:
        assert [(d.id, d.name, d.deleted) for d in tx.query("harness", "alpha")] == \
            [("h1", "smoke", False), ("h2", "folded name", False)]
        assert tx.get("harness", "h1").created == "2024-01-02T00:00:00.000000Z"
        assert tx.get("group", "alpha") is not None


def test_unknown_kinds_and_odd_documents_round_trip(store, path):
    odd = [
        Doc(kind="widget", id="w1", group="alpha", name="wid", deleted=False, created="2024-01-01",
            body={"anything": [1, 2.5, {"deep": None}], "text": "ünï ✓"}),
        # Index columns that do not follow from the body, and a body with an `_index` key.
        Doc(kind="harness", id="h-odd", group="beta", name=None, deleted=True, created="2023-12-31",
            body={"id": "other", "_index": 7}),
        Doc(kind="image", id="i-odd", group="alpha", name=None, deleted=False, created="2024-01-01",
            body={"groups": ["zeta"]}, visible=("gamma",)),
    ]
    insert(store, *odd)
    data = yaml.safe_load(path.read_text())
    assert data["widgets"][0]["text"] == "ünï ✓"
    with YamlStorage(path).read() as tx:
        for doc in odd:
            assert tx.get(doc.kind, doc.id) == doc
        assert [d.id for d in tx.query("image", "gamma")] == ["i-odd"]
        assert tx.query("image", "zeta") == []


# -- a broken file ---------------------------------------------------------------------------

def test_broken_file_is_refused_naming_the_line_and_the_last_good_state_is_kept(store, path, caplog):
    insert(store, make_harness(1, name="good"), make_harness(2, name="other", created=1))
    lines = path.read_text().splitlines()
    bad_line = next(i for i, line in enumerate(lines) if "name: other" in line) + 1
    hand_edit(path, "  name: other\n", "  name: other: oops\n")
    broken = path.read_bytes()
    # Reads go on from the last good data; a warning names the line.
    assert harness_name(store, 2) == "other"
    assert f"line {bad_line}" in caplog.text
    # Writes are refused with the same error, and the person's file is left as it is.
    with pytest.raises(StorageError, match=f"line {bad_line}"):
        insert(store, make_harness(3))
    assert path.read_bytes() == broken
    # A process that starts now has no good data to fall back on: it reports the error.
    fresh = YamlStorage(path)
    with pytest.raises(StorageError, match=f"{path}: not valid YAML at line {bad_line}"):
        fresh.current_version()
    with pytest.raises(StorageError, match=f"line {bad_line}"):
        with fresh.read():
            pass
    # Once fixed, everything works again.
    # An unclosed bracket is found on a later line: the message names where it was opened.
    hand_edit(path, "  name: other: oops\n", "  name: [other\n")
    with pytest.raises(StorageError, match=f"while parsing a flow sequence started at line {bad_line}"):
        insert(store, make_harness(3))
    hand_edit(path, "  name: [other\n", "  name: fixed\n")
    insert(store, make_harness(3, name="third", created=2))
    with fresh.read() as tx:
        assert [d.name for d in tx.query("harness")] == ["good", "fixed", "third"]


def test_hand_edit_that_breaks_uniqueness_is_refused_naming_the_record(store, path):
    insert(store, make_harness(1, name="one"), make_harness(2, name="two", created=1))
    lines = path.read_text().splitlines()
    second = next(i for i, line in enumerate(lines) if "- id: " + str(uid(2)) in line) + 1
    hand_edit(path, "name: two", "name: one")
    with pytest.raises(StorageError, match=f"line {second}: item 2 of `harnesses`: a second live record named 'one'"):
        insert(store, make_harness(3))
    assert harness_name(store, 2) == "two"  # the last good data


@pytest.mark.parametrize("text, message", [
    ("", "the file must be a mapping"),
    ("groups: [alpha, beta]\n", "`schema_version` is missing"),
    ("schema_version: 2\ngroups: [alpha]\n", "line 2: item 1 of `groups`: a record must be a mapping"),
    ("schema_version: 2\nharnesses:\n- name: x\n  group: g\n", "line 3: item 1 of `harnesses`: `id` is missing"),
    ("schema_version: 2\nharnesses: {a: 1}\n", "`harnesses`: must be a list of records"),
])
def test_files_the_backend_cannot_index_are_refused_clearly(path, text, message):
    """A fixtures file (groups as names, records without ids) is for `xpresso-env load`."""
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(StorageError, match=message):
        YamlStorage(path).current_version()


# -- atomic writes, locks, processes ---------------------------------------------------------

def test_writes_are_atomic_and_leave_no_temp_files(store, path):
    insert(store, make_group("alpha"))
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def watch() -> None:
        # Reads the file directly, as another tool would, while commits replace it.
        while not stop.is_set():
            try:
                seen.append(len(yaml.load(path.read_bytes(), Loader=fmt.Loader)["harnesses"] or []))
            except BaseException as exc:
                errors.append(exc)
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for n in range(1, 41):
            insert(store, make_harness(n, name=f"h{n}", created=n, site="x" * 500))
    finally:
        stop.set()
        watcher.join(30)
    assert errors == [] and seen == sorted(seen) and seen
    assert sorted(os.listdir(path.parent)) == ["xpresso.yaml", "xpresso.yaml.lock"]


def test_temp_files_of_a_killed_writer_are_swept(store, path):
    orphan = path.with_name(f".{path.name}.999.dead.tmp")
    orphan.write_text("half a file")
    fresh = YamlStorage(path)
    insert(fresh, make_harness(1))
    assert not orphan.exists()
    fresh.close()


def test_a_failed_commit_changes_nothing(store, path, monkeypatch):
    insert(store, make_harness(1, name="kept"))
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # a double for a full disk: cannot be made here
    with pytest.raises(StorageUnavailable, match="No space left"):
        insert(store, make_harness(2, name="lost"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["xpresso.yaml", "xpresso.yaml.lock"]
    with store.read() as tx:
        assert tx.get("harness", str(uid(2))) is None
    insert(store, make_harness(2, name="now"))


def test_hand_edit_during_a_write_is_not_overwritten(store, path):
    insert(store, make_harness(1, name="one"))
    with pytest.raises(StorageUnavailable, match="changed by hand"):
        with store.write() as tx:
            tx.insert(to_doc(make_harness(2, name="two")))
            hand_edit(path, "name: one", "name: edited-meanwhile")
    assert "edited-meanwhile" in path.read_text()
    assert harness_name(store, 1) == "edited-meanwhile"


def test_nested_write_in_one_thread_is_an_error_not_a_deadlock(store):
    with store.write():
        with pytest.raises(StorageError, match="already open"):
            with store.write():
                pass


def test_read_transaction_refuses_changes(store):
    with store.read() as tx:
        with pytest.raises(StorageError, match="read transaction"):
            tx.insert(to_doc(make_harness(1)))


def test_a_held_lock_times_out_as_unavailable(store, path):
    import fcntl

    fd = os.open(store.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process's write, frozen
    try:
        slow = YamlStorage(path, busy_timeout_s=0.3)
        with pytest.raises(StorageUnavailable, match="locked"):
            insert(slow, make_harness(1))
    finally:
        os.close(fd)
    insert(store, make_harness(1))


_CHILD = """
import sys, dataclasses
from pathlib import Path
from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env_plugins.storage_yaml import YamlStorage
from xpresso_env.testing.storage_suite import make_harness
backend = YamlStorage(Path(sys.argv[1]))
worker, rounds = int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for k in range(rounds):
    with backend.write() as tx:  # read-modify-write of one shared record
        h = from_doc(tx.get("harness", sys.argv[4]))
        tx.update(to_doc(dataclasses.replace(h, site=str(int(h.site) + 1))))
    with backend.write() as tx:  # and a record of its own
        tx.insert(to_doc(make_harness(10000 * (worker + 1) + k, name=f"w{worker}-{k}", created=k)))
print("done", flush=True)
"""


def test_two_processes_writing_at_once_lose_no_update(store, path):
    insert(store, make_harness(1, name="counter", site="0"))
    rounds = 25
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(w), str(rounds), str(uid(1))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0 and out.strip() == "done", err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with store.read() as tx:
        assert from_doc(tx.get("harness", str(uid(1)))).site == str(2 * rounds)
        assert len(tx.query("harness", "alpha")) == 1 + 2 * rounds
    # And the file agrees, read by plain PyYAML.
    assert len(yaml.safe_load(path.read_text())["harnesses"]) == 1 + 2 * rounds


# -- schema versions -------------------------------------------------------------------------

def test_version_1_file_upgrades_and_a_newer_file_is_refused(path):
    old = YamlStorage(path)
    assert old.init(target_version=1) == 1
    image = make_image(1, groups=("beta",))
    with pytest.raises(SchemaOutdated):  # version 1 has no visible groups
        insert(old, image)
    insert(old, dataclasses.replace(to_doc(image), visible=()))
    assert yaml.safe_load(path.read_text())["schema_version"] == 1
    new = YamlStorage(path)
    assert new.init() == 3
    with new.read() as tx:
        assert tx.get("image", str(uid(1))).visible == ()  # as SQLite's upgrade leaves it
    with new.write() as tx:
        tx.update(to_doc(image))
    with YamlStorage(path).read() as tx:
        assert tx.get("image", str(uid(1))).visible == ("beta",)
    hand_edit(path, "schema_version: 3", "schema_version: 4")
    with pytest.raises(StorageError, match="newer than this xpresso-env knows"):
        YamlStorage(path).init()
    with pytest.raises(StorageError, match="newer"):
        insert(YamlStorage(path), make_harness(5))
    with pytest.raises(StorageError, match="unknown"):
        YamlStorage(path).init(target_version=9)


def test_bodies_that_json_cannot_hold_are_refused(store):
    with pytest.raises(StorageError, match="cannot be stored"):
        insert(store, Doc(kind="harness", id="x", group="g", name="n", deleted=False, created="t",
                          body={"when": object()}))
    with pytest.raises(StorageError, match="not valid Unicode"):
        insert(store, Doc(kind="harness", id="x", group="g", name="n", deleted=False, created="t",
                          body={"text": "\ud800"}))


# -- the fast line reader agrees with PyYAML -------------------------------------------------

TRICKY_TEXT = [
    "", " ", "a", "a b", " lead", "trail ", "true", "True", "yes", "no", "on", "off", "null", "Null",
    "~", "12", "-3", "012", "0x1f", "1_000", "1.5", "1e3", ".inf", "-.inf", ".nan", "1:20", "2024-01-01",
    "2024-01-01T00:00:00Z", "2024-01-01 10:00:00", "-", "- x", "--- x", "...", "? x", "x: y", "x:y", "x #y",
    "#x", "[x]", "{x}", "x, y", "'x'", '"x"', "x'y", 'x"y', "\\", "a\\nb", "line\nbreak", "tab\there",
    "\x00", "\x7f", "\x85", "\u2028", "\u2029", "\ufeff", "é", "中文", "🚀", "smoke ✓ tests", "@x", "`x",
    "%x", "&x", "*x", "!x", "|", ">", "=", "<<", "x" * 300, "https://ci.example.com/job?a=1&b=2",
    "/path/to/pyATS", "C:\\dir", "a\u00a0b", "\u200b", "ǅ", "k: v, w: z",
]
TRICKY_VALUES = TRICKY_TEXT + [0, 1, -1, 10 ** 30, 1.5, -0.0, 1e-05, 1e300, 2.5e-308, True, False, None,
                               [], {}, [1, "a", None], {"k": [1, {"x": None}]}, [[[]]], {"a b": {"c": []}}]


def both_readers(text: str):
    try:
        slow = yaml.load(text.encode("utf-8"), Loader=fmt.Loader)
        slow_error = None
    except yaml.YAMLError as exc:
        slow, slow_error = None, exc
    fast = subset.read_subset(text)
    if fast is not None:
        assert slow_error is None, (text, slow_error)
        assert fast == slow and repr(fast) == repr(slow), text
    return fast, slow


def test_whatever_the_writer_writes_reads_back_equal_by_both_readers():
    records = [{"id": f"r{i}", "value": v, "list": [v, v], "map": {"k": v}} for i, v in enumerate(TRICKY_VALUES)]
    records += [{k: "v"} for k in TRICKY_TEXT if k]  # tricky keys too
    text = fmt.compose_yaml(2, [("harnesses", [subset.render_yaml(r) for r in records])])
    fast, slow = both_readers(text)
    assert slow["harnesses"] == records
    # The subset covers every value above (raw control characters go in double quotes); only
    # the long key and NaN-like corner cases may leave it, and then PyYAML reads the file.
    per_record = [subset.read_subset(fmt.compose_yaml(2, [("x", [subset.render_yaml(r)])])) for r in records]
    outside = [r for r, got in zip(records, per_record) if got is None]
    assert all(any(len(k) > 256 for k in r) for r in outside), outside


def test_mutated_files_are_read_as_pyyaml_reads_them_or_left_to_it():
    """Random damage to a real file: the line reader either agrees with PyYAML or gives up."""
    base = fmt.compose_yaml(2, [
        ("groups", [subset.render_yaml({"name": "alpha", "date_created": "2024-01-01T00:00:00.000000Z"})]),
        ("harnesses", [subset.render_yaml(to_doc(make_harness(1, name="x y", site="it's")).body),
                       subset.render_yaml({"id": "i", "roles": {"a": "member"}, "l": [1, "two", None],
                                        "f": -1.5, "q": "say \"hi\"\n"})]),
        ("engines", []),
    ])
    rng = random.Random(20240304)
    alphabet = list(" -:#'\"[]{},&*!|>%@`?\\\n\t0aZ~.=+é\u2028") + ["  ", "- ", ": ", "''", "true", "1.0"]
    agreed = gave_up = 0
    for _ in range(1500):
        chars = list(base)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.45:
                chars.insert(pos, rng.choice(alphabet))
            elif op < 0.8:
                del chars[pos]
            else:
                chars[pos] = rng.choice(alphabet)
        fast, _ = both_readers("".join(chars))
        if fast is None:
            gave_up += 1
        else:
            agreed += 1
    assert agreed > 300 and gave_up > 300  # both paths were exercised


@pytest.mark.slow
def test_first_load_of_10000_records_uses_the_line_reader(path):
    """Not a timing (that is benchmarks/yaml_startup.py): the big file stays in the fast subset."""
    backend = YamlStorage(path)
    backend.init()
    with backend.write() as tx:
        for n in range(10000):
            tx.insert(to_doc(make_harness(n + 1, group=f"g{n % 200}", created=n)))
    assert subset.read_subset(path.read_text(encoding="utf-8")) is not None
    with YamlStorage(path).read() as tx:
        assert len(tx.query("harness", "g7")) == 50
    backend.close()


def test_state_is_isolated_from_callers(store):
    (doc,) = insert(store, make_harness(1))
    with store.read() as tx:
        got = tx.get("harness", doc.id)
    got.body["name"] = "mutated by a caller"
    doc.body["path"] = "mutated after insert"
    with store.read() as tx:
        assert tx.get("harness", doc.id) == to_doc(make_harness(1))
    assert json.dumps(to_doc(make_harness(1)).body)  # bodies are plain JSON
