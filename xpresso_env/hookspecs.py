"""Hook specifications. Every hook is prefixed ``xpresso_`` and called with keyword arguments."""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("xpresso_env")
hookimpl = pluggy.HookimplMarker("xpresso_env")


@hookspec
def xpresso_storage_backends():
    """Announce storage backends.

    :returns: a list of :class:`xpresso_env.storage.StorageBackendInfo`; the configuration's
        ``storage.backend`` picks one by name.
    """


@hookspec
def xpresso_builders():
    """Announce image builders.

    :returns: a list of :class:`xpresso_env.builds.sdk.builder.BuilderInfo`; ``builder.backend`` picks one.
    """


@hookspec
def xpresso_probers():
    """Announce operational-state probers (CONTRACT section 8).

    :returns: a list of :class:`xpresso_env.probes.protocol.ProberInfo`, each naming the record kind
        (``harness`` | ``engine``) and the types it probes; a record whose type no prober
        claims is not probed (it stays UNKNOWN).
    """


@hookspec
def xpresso_identity_providers():
    """Announce identity providers (CONTRACT section 13): who may sign in, and how.

    :returns: a list of :class:`xpresso_env.access.providers.IdentityProviderInfo`;
        ``auth.providers`` names the ones to use, tried in that order at each sign-in.
    """


@hookspec
def xpresso_startup(ctx):
    """Called once the application context is built, before serving.

    :param ctx: the :class:`xpresso_env.app.AppContext`.
    """


@hookspec
def xpresso_shutdown(ctx):
    """Called when the application context is closed.

    :param ctx: the :class:`xpresso_env.app.AppContext`.
    """


@hookspec
def xpresso_record_saved(kind, record, created):
    """Called after a record is committed (never inside a transaction). A plugin that needs
    the service keeps what it needs from ``xpresso_startup``.

    :param kind: the record kind (``harness``, ``engine``, ``image``...).
    :param record: the committed record.
    :param created: True on create, False on update.
    """


@hookspec
def xpresso_record_deleted(kind, record):
    """Called after a record is soft-deleted and the deletion committed.

    :param kind: the record kind.
    :param record: the record as it is after deletion.
    """


@hookspec
def xpresso_build_finished(image):
    """Called after an image build ends (successful, failed or cancelled) and is committed.

    :param image: the final :class:`xpresso_env.core.models.Image`.
    """


@hookspec
def xpresso_add_routes(app, ctx):
    """Let a plugin mount more routes.

    :param app: the ``falcon.App``.
    :param ctx: the application context.
    """
