"""The ``dry-run`` builder: no image, a tar of the build context instead.

The checkout, merge and discovery around it run for real; only the image build is skipped, and
the result says so (``meta.dry_run``, an ``image_id`` that is not ``sha256:``, a log line). It is
never chosen by ``auto``: only by name.

With ``registry.url`` set, a dry-run build pushes nothing (there is no image): it says so in the
log and in ``meta.push`` and reports no ``push_url``; the build still succeeds.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import time
from pathlib import Path
from typing import Optional

from xpresso_env.builds.sdk.builder import (
    BuildCancelled,
    Builder,
    BuilderInfo,
    BuildRequest,
    BuildResult,
    BuildTimedOut,
    discard,
    dockerfile_path,
    publish,
    temp_path_for,
)
from xpresso_env.hookspecs import hookimpl

ID_PREFIX = "dryrun:"


class DryRunBuilder(Builder):
    name = "dry-run"
    streams_context = False  # its tar is made from the checked-out folder (builders.py)

    def available(self) -> Optional[str]:
        return None

    def build(self, request: BuildRequest) -> BuildResult:
        deadline = time.monotonic() + request.timeout_s
        dockerfile_path(request)  # a real build would fail without it
        request.log(f"dry-run builder: NOT building an image for {request.image_ref}; "
                    f"writing a tar of the build context instead")
        request.output_tar.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(request.output_tar)
        root = request.context_dir
        files = 0
        try:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
                for dirpath, dirnames, filenames in os.walk(root):
                    if request.cancel.is_set():
                        raise BuildCancelled("cancelled")
                    if time.monotonic() >= deadline:
                        raise BuildTimedOut("timed out")
                    dirnames[:] = sorted(d for d in dirnames if d != ".git")
                    if Path(dirpath) != root:  # keep empty folders too
                        tar.add(dirpath, arcname=Path(dirpath).relative_to(root).as_posix(), recursive=False)
                    for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                        path = Path(dirpath, name)
                        # add() never follows symbolic links: a link is stored as a link.
                        tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
                        files += 1
            digest = hashlib.sha256()
            with open(tmp, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            size = publish(tmp, request.output_tar)
        except BaseException:
            discard(tmp)
            raise
        image_id = ID_PREFIX + digest.hexdigest()
        request.log(f"dry-run: wrote {request.output_tar} ({files} files, {size} bytes); no image was built")
        meta: dict = {"dry_run": True}
        if request.push is not None:
            request.log(f"dry-run: NOT pushing to {request.push.ref} (there is no image); push_url stays null")
            meta["push"] = f"skipped (dry-run): {request.push.ref}"
        return BuildResult(image_id=image_id, size=size, virtual_size=size, meta=meta)

    def remove_image(self, image_ref: str) -> None:
        return None  # there is no image

    def remove_stale(self, older_than_s: float) -> list[str]:
        return []  # it never tags anything


@hookimpl
def xpresso_builders():
    return [BuilderInfo(name="dry-run", description="no image: a tar of the build context (for trying the service)",
                        factory=lambda settings: DryRunBuilder(), auto_priority=None)]
