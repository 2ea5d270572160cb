"""The image's tar (a docker-archive): saved from the daemon as it streams, then renamed.

The image is built and saved under a temporary tag (``<name>:xpresso-build-<time>-<hex>``), so
two groups building the same ``name:tag`` at once never save each other's image; the tar's
``manifest.json``/``repositories`` are then made to name ``<name>:<tag>`` (rewritten in place:
they are the archive's last members).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterator, Optional

from xpresso_env.builds.sdk.builder import BuildFailed, discard

from .abort import Abort

SAVE_CHUNK = 1 << 20
WRITEBACK_STEP = 8 << 20  # bytes of tar written between two writeback kicks


def save(api, ref: str, tmp: Path, abort: Abort) -> None:
    """Write the image ``ref`` as the daemon streams it (``GET /images/{name}/get``) to ``tmp``,
    stopped like the build by :class:`Abort`."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    chunks: Iterator[bytes] = api.get_image(ref, chunk_size=SAVE_CHUNK)
    with open(tmp, "wb") as out:
        written = flushed = 0
        for chunk in chunks:
            abort.check()
            out.write(chunk)
            written += len(chunk)
            if written - flushed >= WRITEBACK_STEP:
                start_writeback(out.fileno(), flushed, written - flushed)
                flushed = written
    abort.check()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the tar to disk now, without waiting: the fsync that publishes
    it then finds little left to write (figures: benchmarks/README.md, builds). Linux starts
    writeback of dirty pages on POSIX_FADV_DONTNEED (PostgreSQL's pg_flush_data does the same
    where sync_file_range is missing); durability still rests on publish()'s fsync."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


_RENAMED = ("manifest.json", "repositories", "index.json")  # the members that name the image


def rename_in_archive(path: Path, temp: str, final: str) -> Optional[str]:
    """Make the docker-archive at ``path``, saved as ``temp`` (``name:<temporary tag>``), name
    ``final`` (``name:tag``) instead; returns the image id its manifest records.

    The members that carry the name are small and, as ``docker save`` writes them, the last
    ones: they are rewritten in place (truncate, append); otherwise the archive is copied."""
    old_tag, new_tag = temp.rsplit(":", 1)[1], final.rsplit(":", 1)[1]
    with tarfile.open(path, "r:") as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.offset)
        texts = {m.name: tar.extractfile(m).read() for m in members if m.name in _RENAMED and m.isfile()}
        fmt = tar.format
    if "manifest.json" not in texts:
        raise BuildFailed("the saved image archive has no manifest.json")
    new = {name: data.replace(old_tag.encode(), new_tag.encode()) for name, data in texts.items()}
    first = next(i for i, m in enumerate(members) if m.name in new)
    if all(m.name in new for m in members[first:]):
        with open(path, "r+b") as fh:
            fh.truncate(members[first].offset)
            fh.seek(members[first].offset)
            with tarfile.open(fileobj=fh, mode="w", format=fmt) as out:
                for m in members[first:]:
                    _add_bytes(out, m, new[m.name])
    else:  # another layout: copy every member, the renamed ones changed
        copy = path.with_name(path.name + ".rename")
        try:
            with tarfile.open(path, "r:") as tar, tarfile.open(copy, "w", format=fmt) as out:
                for m in tar:
                    if m.name in new:
                        _add_bytes(out, m, new[m.name])
                    else:
                        out.addfile(m, tar.extractfile(m) if m.isfile() else None)
            os.replace(copy, path)
        finally:
            discard(copy)
    try:
        manifest = json.loads(new["manifest.json"])
    except ValueError:
        return None
    if not isinstance(manifest, list) or len(manifest) != 1 or manifest[0].get("RepoTags") != [final]:
        return None
    config = str(manifest[0].get("Config", ""))
    config = config.rsplit("/", 1)[-1].removesuffix(".json")
    return config if config.startswith("sha256:") else f"sha256:{config}"


def _add_bytes(out: tarfile.TarFile, like: tarfile.TarInfo, data: bytes) -> None:
    info = tarfile.TarInfo(like.name)
    info.mode, info.mtime, info.uid, info.gid, info.size = like.mode, like.mtime, like.uid, like.gid, len(data)
    out.addfile(info, io.BytesIO(data))
