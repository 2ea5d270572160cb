"""The built-in xpresso-env plugins (installed as ``xpresso_env_plugins``)."""
