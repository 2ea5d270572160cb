"""Settings: precedence, types, unknown keys, and the shipped default.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest

from xpresso_env.config import Settings, load_settings, settings_as_dict
from xpresso_env.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_documents_exactly_the_defaults():
    shipped = load_settings(ROOT / "config" / "default.yaml", env={})
    assert settings_as_dict(shipped) == settings_as_dict(Settings())


def test_precedence_defaults_file_env_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server: {port: 9000, threads: 3}\nimages: {nfs_root: nfs}\n")
    s = load_settings(cfg, env={})
    assert (s.server.port, s.server.threads, s.server.host) == (9000, 3, "127.0.0.1")
    assert s.resolve(s.images.nfs_root) == tmp_path / "nfs"  # relative to the file's folder
    s = load_settings(cfg, env={"XPRESSO_ENV_SERVER_PORT": "9100", "XPRESSO_ENV_BUILDER_DOCKER_BASE_URL": "unix:///d.sock"})
    assert s.server.port == 9100 and s.builder.docker.base_url == "unix:///d.sock" and s.server.threads == 3
    s = load_settings(cfg, env={"XPRESSO_ENV_SERVER_PORT": "9100"}, overrides={"server": {"port": 9200}})
    assert s.server.port == 9200
    s = load_settings(None, env={"XPRESSO_ENV_CONFIG": str(cfg)})
    assert s.server.port == 9000


@pytest.mark.parametrize("text,where", [
    ("storage: {colour: red}", "storage.colour"),
    ("nonsense: 1", "nonsense"),
    ("server: {port: '80'}", "server.port"),
    ("server: {port: 0}", "server.port"),
    ("server: {access_log: 'yes'}", "server.access_log"),
    ("builder: {docker: {base_url: 5}}", "builder.docker.base_url"),
    ("builder: {docker: [1]}", "builder.docker"),
    ("storage: [1, 2]", "storage"),
])
def test_bad_files_name_key_and_file(tmp_path, text, where):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert where in str(info.value) and str(cfg) in str(info.value)


def test_bad_env_values_name_the_variable():
    with pytest.raises(ConfigError, match="XPRESSO_ENV_BUILDS_MAX_CONCURRENT"):
        load_settings(None, env={"XPRESSO_ENV_BUILDS_MAX_CONCURRENT": "two"})
    s = load_settings(None, env={"XPRESSO_ENV_SERVER_ACCESS_LOG": "false", "XPRESSO_ENV_STORAGE_DSN": "null"})
    assert s.server.access_log is False and s.storage.dsn is None


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "b.yaml"
    bad.write_text("server: {port: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, env={})
