"""The connection to the Docker daemon: the docker SDK (imported when a builder is made, so a
missing SDK is a configuration error, not an import error of the plugin), one low-level client
per build, and the daemon's API version asked once."""
from __future__ import annotations

from typing import Any, Optional

from xpresso_env.core.errors import ConfigError

PING_TIMEOUT_S = 3.0
# Read timeout of ordinary API calls (inspect, save chunks). The build stream itself has none:
# a quiet RUN step may last; the build's own deadline bounds it instead.
API_TIMEOUT_S = 300.0


def import_docker():
    try:
        import docker  # noqa: F401
        import docker.errors  # noqa: F401
    except ImportError:
        raise ConfigError("the docker SDK is not installed (pip install docker)") from None
    return docker


def short(exc: BaseException) -> str:
    """A one-line reason from a docker/requests exception (they nest long messages)."""
    text = str(getattr(exc, "explanation", None) or exc) or type(exc).__name__
    for marker in ("Connection refused", "No such file or directory", "Permission denied",
                   "timed out", "Name or service not known"):
        if marker in text:
            return marker
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:197] + "..."


class DockerClient:
    """Makes the low-level clients of one daemon (``base_url``, else ``DOCKER_HOST`` of
    ``environ``, else the default socket).

    :param docker_module: the docker SDK (:func:`import_docker`).
    """

    def __init__(self, docker_module, base_url: Optional[str], environ: dict[str, str]):
        self.docker = docker_module
        self.errors = docker_module.errors
        self.base_url = base_url
        self.environ = environ
        self._version: Optional[str] = None  # the daemon's API version, once asked (api)

    def where(self) -> str:
        return self.base_url or self.environ.get("DOCKER_HOST") or "the default socket"

    def _client_kwargs(self) -> dict[str, Any]:
        if self.base_url:
            return {"base_url": self.base_url}
        return self.docker.utils.kwargs_from_env(environment=self.environ)

    def api(self, timeout: float, negotiate: bool = False):
        """A new low-level client (one per build: its session carries the build's abort hook).
        The API version is asked by :meth:`ping` and the first build (``auto`` costs a
        ``GET /version`` each time), then reused; asked again after a refusal."""
        version = "auto" if negotiate or self._version is None else self._version
        api = self.docker.APIClient(version=version, timeout=timeout, **self._client_kwargs())
        self._version = api.api_version
        return api

    def version_refused(self, exc: BaseException) -> None:
        """A refused API version (the daemon was replaced by an older one): ask again next time."""
        if "client version" in str(getattr(exc, "explanation", None) or exc).lower():
            self._version = None

    def ping(self) -> Optional[str]:
        """None when the daemon answers, else why not."""
        try:
            api = self.api(PING_TIMEOUT_S, negotiate=True)
        except Exception as exc:  # DockerException, requests errors: the daemon does not answer
            return f"docker daemon not reachable at {self.where()}: {short(exc)}"
        try:
            api.ping()
        except Exception as exc:
            return f"docker daemon not reachable at {self.where()}: {short(exc)}"
        finally:
            api.close()
        return None
