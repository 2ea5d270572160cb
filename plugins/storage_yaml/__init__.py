"""YAML file storage: one human-readable document, for local development and small teams.

The whole document lives in memory as an immutable snapshot with per-kind indexes (id, owner
group, visible groups, live names), so reads are dictionary look-ups and never wait for a writer.
Every write transaction rewrites the whole file, which is why this backend suits development and
small data sets (up to some 10,000 records); use sqlite or postgres beyond that.

Files, all in the folder of ``storage.path`` (default ``var/xpresso.yaml``):

* ``xpresso.yaml``: the data (its layout in ``format.py``, the subset of YAML it is written in
  and the fast reader in ``subset.py``). Written atomically by
  ``xpresso_env.runtime.fsutil.atomic_write`` (temp file beside it, fsync, rename, fsync of the
  folder; the file's permissions are kept). Each record's text is rendered once and kept, so a
  commit mostly joins kept text.
* ``xpresso.yaml.lock``: the advisory ``flock`` that makes several processes safe: a write
  transaction holds it exclusively from its start to the file replaced, and re-reads the file
  under it first, so no process loses another's update; loading takes it shared, so no process
  reads a half-finished commit. It also holds a commit counter: together with the file's
  (mtime, size, inode), it tells every transaction cheaply whether it must reload.

Change counters (``ChangeCounters``): one counter for the whole store (``versions_store_wide``), as
the contract allows. It is a stamp kept in memory by each backend object: every new snapshot it
publishes -- its own commit, or a reload after another process's commit or a hand edit -- gets the
next number, so the value is monotonic, changes with every change of the data this process can
see, and is read from the same snapshot as the data. It stays 0 while the store holds no
documents, as "never written" reads 0 on the other backends. The numbers of two processes are not
comparable with each other, and need not be: a response cache lives in one process.

Hand edits are picked up on the next transaction (noticed by the file's mtime, size or inode). A
file that no longer parses, or breaks a rule (a duplicate id, two live records with one name), is
refused with a StorageError naming the line (503 through the API): the file is left as it is for
the person to fix, reads go on serving the last good data (a warning is logged once), and writes
are refused with that error until the file is fixed; a process that starts on a refused file has
no good data and refuses reads too. The lock cannot cover an editor: a hand edit saved during a
write transaction makes that transaction fail with StorageUnavailable rather than be overwritten,
and an editor that rewrites the file in place (instead of saving a new file and renaming it, as
most do) may be read half-saved, which is then refused as broken until the save completes.
"""
from __future__ import annotations

from xpresso_env.config import Settings
from xpresso_env.hookspecs import hookimpl
from xpresso_env.storage import StorageBackendInfo

from .format import SCHEMA_VERSION
from .store import YamlStorage
from .tx import YamlTx

# Modules: format (the file's layout: kinds, records, index columns), subset (the subset of YAML
# written and its fast reader), snapshot (the data in memory), tx (a transaction), store (the
# file, its lock, loading and writing).
__all__ = ["YamlStorage", "YamlTx", "SCHEMA_VERSION"]


def _factory(settings: Settings) -> YamlStorage:
    return YamlStorage(settings.storage_path("xpresso.yaml"), settings.storage.busy_timeout_s)


@hookimpl
def xpresso_storage_backends():
    return [StorageBackendInfo(name="yaml", description="one human-readable YAML file; for development "
                               "and small teams", factory=_factory)]
