"""Registry push through the daemon: the docker SDK's push of a temporary
``<host>/<namespace>/<name>:<tag>`` tag with ``auth_config`` (the credentials travel in the
request header, never in a log), stopped like the build by closing the stream (:class:`Abort`)."""
from __future__ import annotations

import threading
from typing import Optional

from xpresso_env.builds.sdk.builder import BuildFailed, BuildRequest
from xpresso_env.builds.sdk.push import PushTarget, is_loopback, push_url

from .abort import WATCH_POLL_S, Abort


class DockerPush:
    """Pushes built images; one per builder. The daemon pushes by tag: two builds pushing the
    same registry reference at once (a namespace without {group}) take turns, so each pushes
    its own image."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def push(self, api, request: BuildRequest, target: PushTarget, built_id: str, abort: Abort) -> str:
        """Push the built image as ``target.ref`` (a tag made for the push and removed after);
        returns the pinned reference."""
        request.log(f"pushing {request.image_ref} to {target.ref}")
        with self._locks_guard:
            lock = self._locks.setdefault(target.ref, threading.Lock())
        while not lock.acquire(timeout=WATCH_POLL_S * 4):
            abort.check()
        try:
            return _push_locked(api, request, target, built_id, abort)
        finally:
            lock.release()


def _push_locked(api, request: BuildRequest, target: PushTarget, built_id: str, abort: Abort) -> str:
    api.tag(built_id, target.repository, target.tag, force=True)
    digest: Optional[str] = None
    try:
        stream = api.push(target.repository, target.tag, stream=True, decode=True, auth_config=target.auth)
        try:
            for item in stream:
                abort.check()
                if "error" in item:
                    raise BuildFailed(push_error(" ".join(str(item["error"]).split()), target))
                aux = item.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = str(aux["Digest"])
                elif "status" in item and not item.get("progressDetail"):
                    request.log(" ".join(filter(None, (item.get("id"), str(item["status"])))))
        finally:
            stream.close()
        abort.check()
    finally:
        try:  # the push tag only: the image keeps its other tags
            api.remove_image(target.ref, noprune=True)
        except Exception:  # noqa: BLE001 — a leftover tag is logged, never the build's failure
            if not abort.reason:
                request.log(f"warning: could not remove the push tag {target.ref}")
    if not digest or not digest.startswith("sha256:"):
        raise BuildFailed(f"push failed: the docker daemon reported no digest for {target.ref}")
    url = push_url(target, digest)
    request.log(f"pushed {url}")
    return url


def push_error(message: str, target: PushTarget) -> str:
    """The build's one-line reason for the daemon's push error ``message``."""
    low = message.lower()
    if low.startswith("unauthorized") or "authentication required" in low:
        return f"push refused: 401 {message}"
    if low.startswith("denied") or "requested access to the resource is denied" in low:
        return f"push refused: 403 {message}"
    if "http response to https client" in low and not is_loopback(target.registry):
        return (f"push failed: {message} (the docker daemon talks HTTPS to {target.registry}: add it to "
                f"\"insecure-registries\" in its daemon.json)")
    return f"push failed: {message}"
