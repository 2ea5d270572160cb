"""The daemon's image store kept clean.

Only a build that fully succeeded (tar written, push done) takes the tag ``<name>:<tag>`` in the
daemon; the image it replaces there is removed when nothing else uses it. A failed or cancelled
build removes its temporary tag and every intermediate image its own steps created (cache hits
and base images are not touched); ``forcerm`` removes the step containers.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from xpresso_env.builds.sdk.builder import BuildRequest, stale_temp_tag
from xpresso_env.core.errors import Conflict, ServiceUnavailable

from .client import API_TIMEOUT_S, DockerClient, short

TIDY_WAIT_S = 15.0  # how long a stopped build's leftovers are waited for (its step container's removal)


class ImageStore:
    def __init__(self, client: DockerClient):
        self.client = client

    def tidy(self, request: BuildRequest, temp: str, kept: Optional[str], ours: list[str], api=None) -> None:
        """After the build (on a fresh connection unless ``api`` is given: a stopped build's was
        shut down): a successful build (``kept``) takes ``name:tag``; every build drops its
        temporary tag; a failed one drops its own layers. The image a successful build replaced
        is removed in the background, if nothing else uses it: the build need not wait for it."""
        errors = self.client.errors
        own = api is None
        if own:
            try:
                api = self.client.api(API_TIMEOUT_S)
            except Exception:
                request.log(f"warning: docker daemon not reachable: {temp} and its layers are left")
                return
        try:
            if kept is not None:
                name, tag = request.image_ref.rsplit(":", 1)
                previous = _image_id(api, errors, request.image_ref)
                api.tag(kept, name, tag, force=True)
                if previous and previous != kept:
                    threading.Thread(target=self._remove_replaced, args=(previous,), daemon=True,
                                     name="docker-remove-replaced").start()
            try:
                api.remove_image(temp, noprune=kept is not None)
            except errors.NotFound:
                pass
            # A stopped build's step container may still be on its way out (the daemon kills
            # and removes it after the request closed): retry the images it holds a while.
            pending, until = list(reversed(ours)), time.monotonic() + TIDY_WAIT_S
            while pending:
                pending = [image for image in pending if _remove_if_unused(api, errors, image) == "busy"]
                if not pending or time.monotonic() > until:
                    break
                time.sleep(0.2)
            if ours:
                request.log("removed the intermediate images of the unfinished build" if not pending else
                            f"warning: intermediate images still in use, left: {', '.join(i[:12] for i in pending)}")
        except Exception as exc:  # noqa: BLE001 — a leftover is logged, never the build's failure
            request.log(f"warning: cleaning the docker image store: {short(exc)}")
        finally:
            if own:
                api.close()

    def _remove_replaced(self, image_id: str) -> None:
        try:
            api = self.client.api(API_TIMEOUT_S)
        except Exception:
            return
        try:
            _remove_if_unused(api, self.client.errors, image_id)
        except Exception:  # noqa: BLE001 — a background tidy-up: a leftover, never an error
            pass
        finally:
            api.close()

    def remove_stale(self, older_than_s: float) -> list[str]:
        """Remove the temporary tags (and their images) of builds that never tidied up."""
        errors = self.client.errors
        removed: list[str] = []
        try:
            api = self.client.api(API_TIMEOUT_S)
        except Exception as exc:
            raise ServiceUnavailable(f"docker daemon not reachable at {self.client.where()}: {short(exc)}") from None
        try:
            for image in api.images():
                for ref in image.get("RepoTags") or []:
                    if stale_temp_tag(ref, older_than_s):
                        try:
                            api.remove_image(ref, noprune=False)
                            removed.append(ref)
                        except errors.APIError:
                            pass
        finally:
            api.close()
        return removed

    def remove_image(self, image_ref: str) -> None:
        errors = self.client.errors
        try:
            api = self.client.api(API_TIMEOUT_S)
        except Exception as exc:
            raise ServiceUnavailable(f"docker daemon not reachable at {self.client.where()}: {short(exc)}") from None
        try:
            api.remove_image(image_ref, force=True)
        except errors.NotFound:
            pass
        except errors.APIError as exc:
            if exc.status_code == 409:
                raise Conflict(f"cannot remove {image_ref}: {short(exc)}") from None
            raise ServiceUnavailable(f"cannot remove {image_ref}: {short(exc)}") from None
        except Exception as exc:
            raise ServiceUnavailable(f"docker daemon not reachable at {self.client.where()}: {short(exc)}") from None
        finally:
            api.close()


def _image_id(api, errors, ref: str) -> Optional[str]:
    try:
        return str(api.inspect_image(ref)["Id"])
    except errors.NotFound:
        return None


def _remove_if_unused(api, errors, image_id: str) -> str:
    """Remove an untagged image (and its untagged parents) unless a tag, a child image or a
    container still uses it. Returns ``removed``, ``kept`` (tagged, or has children) or
    ``busy`` (a container uses it: the daemon may be removing that container right now)."""
    try:
        if api.inspect_image(image_id).get("RepoTags"):
            return "kept"
        api.remove_image(image_id, force=False, noprune=False)
        return "removed"
    except errors.NotFound:
        return "removed"
    except errors.APIError as exc:
        text = str(getattr(exc, "explanation", "") or exc).lower()
        return "busy" if exc.status_code == 409 and "container" in text else "kept"
