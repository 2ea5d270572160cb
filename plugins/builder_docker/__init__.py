"""The ``docker`` builder plugin: builds through a Docker daemon with the docker SDK.

Its parts: :mod:`.builder` (one build, start to end), :mod:`.client` (the daemon connection),
:mod:`.context` (the build context streamed from a folder or a git tree), :mod:`.abort`
(stopping a running request by closing its connection), :mod:`.archive` (the image's tar,
saved and renamed), :mod:`.push` (registry push through the daemon) and :mod:`.store` (the
daemon's image store kept clean).
"""
from __future__ import annotations

from xpresso_env.builds.sdk.builder import BuilderInfo
from xpresso_env.hookspecs import hookimpl

from .builder import DockerBuilder

__all__ = ["DockerBuilder", "xpresso_builders"]


def _factory(settings) -> DockerBuilder:
    d = settings.builder.docker
    return DockerBuilder(base_url=d.base_url, network_mode=d.network_mode)


@hookimpl
def xpresso_builders():
    return [BuilderInfo(name="docker", description="Docker daemon (docker SDK), DOCKER_HOST or builder.docker.base_url",
                        factory=_factory, auto_priority=0)]
