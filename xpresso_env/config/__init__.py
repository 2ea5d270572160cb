"""Settings: frozen dataclasses. Precedence: defaults < YAML file < XPRESSO_ENV_* env < CLI flags.

Every key has a type; an unknown key or a value of the wrong type is a ConfigError that reads
``WHERE: dotted.key: message``, WHERE being the file or the environment variable. An
``XPRESSO_ENV_*`` variable that names no setting (nor one of ``OTHER_ENV``) is an error too: a
typo must not be ignored silently.

The sections are in ``sections.py``, their loading and checks in ``loading.py``; the rest of the
code (and plugins) import them from here.
"""
from .loading import load_settings, settings_as_dict
from .sections import (BLOCK_PLUGINS_ENV, CONFIG_ENV, DEBUG_ENV, ENV_PREFIX, LOG_LEVEL_ENV, OTHER_ENV, PROCESSES_AUTO,
                       AuthSettings, BuildahBuilderSettings, BuilderSettings, BuildsSettings, DockerBuilderSettings,
                       EventsSettings, HeaderAuthSettings, HistorySettings, ImagesSettings, LdapSettings,
                       PolarisSettings, ProbesSettings, ProcessCount, RegistrySettings, ServerSettings, Settings,
                       StorageSettings)

__all__ = ["BLOCK_PLUGINS_ENV", "CONFIG_ENV", "DEBUG_ENV", "ENV_PREFIX", "LOG_LEVEL_ENV", "OTHER_ENV", "PROCESSES_AUTO",
           "AuthSettings", "BuildahBuilderSettings", "BuilderSettings", "BuildsSettings", "DockerBuilderSettings",
           "EventsSettings", "HeaderAuthSettings", "HistorySettings", "ImagesSettings", "LdapSettings",
           "PolarisSettings", "ProbesSettings", "ProcessCount", "RegistrySettings", "ServerSettings", "Settings",
           "StorageSettings", "load_settings", "settings_as_dict"]
