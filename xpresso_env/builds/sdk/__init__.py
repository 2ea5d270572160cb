"""The builder SDK: everything a builder plugin may import from xpresso-env, and nothing it must not.

A builder plugin (``plugins/builder_*``, or a third party's) imports only:

* ``xpresso_env.builds.sdk.builder``: the builder protocol (``Builder``, ``BuilderInfo``,
  ``BuildRequest``, ``BuildResult``, the build's exceptions) and the helpers builders share
  (the tar's temporary name and durable publication, temporary image tags, ``check_registry``);
* ``xpresso_env.builds.sdk.procrun``: running a process in its own group, stopped by a cancel or
  a deadline, its output going to the build log;
* ``xpresso_env.builds.sdk.push``: the push target (``PushTarget``), the pinned reference
  (``push_url``), ``is_loopback``, the short-lived credentials file (``authfile``) and the
  registry pre-flight check;
* ``xpresso_env.hookspecs`` (``hookimpl``), ``xpresso_env.core.errors`` (the typed errors) and
  ``xpresso_env.config`` (``Settings``, which a builder's factory reads).

The other plugin kinds have theirs: a storage plugin imports ``xpresso_env.storage`` (the protocol,
``sql_counters``), ``xpresso_env.core.errors``, ``xpresso_env.config``, ``xpresso_env.runtime.fsutil``
and ``xpresso_env.hookspecs``; a prober ``xpresso_env.probes.protocol`` and ``xpresso_env.hookspecs``.
The import-linter contracts (``.importlinter``) hold plugins to these lists. Where each build's
image goes (``registry.*`` rendered for a group) is the service's side, ``builds/push.py``, which
builders never import.
"""
