"""Settings: precedence, types, unknown keys, and the shipped default.yaml."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xpresso_env.config import Settings, load_settings, settings_as_dict
from xpresso_env.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_documents_exactly_the_defaults():
    shipped = load_settings(ROOT / "config" / "default.yaml", env={})
    assert settings_as_dict(shipped) == settings_as_dict(Settings())


def test_default_yaml_names_every_key():
    # A key left out of the file still loads with its default: the comparison above cannot see it.
    import dataclasses

    import yaml

    def missing(cls: type, node: object, path: str) -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            if f.name in ("source", "base_dir"):  # where the settings came from, not settings
                continue
            if not isinstance(node, dict) or f.name not in node:
                out.append(path + f.name)
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                out += missing(type(default), node[f.name], f"{path}{f.name}.")
        return out

    assert missing(Settings, yaml.safe_load((ROOT / "config" / "default.yaml").read_text()), "") == []


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


@pytest.mark.parametrize("text,message", [
    ("storage: {backnd: sqlite}", "storage.backnd: unknown key (did you mean backend?)"),
    ("nonsense: 1", "nonsense: unknown key (known: "
                    f"{', '.join(sorted(f.name for f in dataclasses.fields(Settings) if f.compare))})"),
    ("builder: {docker: {base_url: 5}}", "builder.docker.base_url: expected a non-empty string, got 5"),
    ("server: {connection_limit: 0}", "server.connection_limit: must be positive"),
    ("server: {channel_timeout_s: -1}", "server.channel_timeout_s: must be positive"),
])
def test_errors_read_file_dotted_key_message(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert str(info.value) == f"{cfg.resolve()}: {message}"


def test_unknown_prefixed_environment_variables_are_errors():
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"XPRESSO_ENV_STORAGE_BACKND": "yaml"})
    assert str(info.value) == ("environment variable XPRESSO_ENV_STORAGE_BACKND: unknown setting "
                               "(did you mean XPRESSO_ENV_STORAGE_BACKEND?)")
    with pytest.raises(ConfigError, match="XPRESSO_ENV_STORAGE: unknown setting"):  # a section is not a setting
        load_settings(None, env={"XPRESSO_ENV_STORAGE": "x"})
    known = {"XPRESSO_ENV_CONFIG": "", "XPRESSO_ENV_LOG_LEVEL": "DEBUG", "XPRESSO_ENV_DEBUG": "1",
             "XPRESSO_ENV_BLOCK_PLUGINS": "x", "XPRESSO_ENV_SERVER_CONNECTION_LIMIT": "50",
             "XPRESSO_TEST_BACKENDS": "sqlite", "OTHER": "1"}
    assert load_settings(None, env=known).server.connection_limit == 50


def test_connection_defaults_keep_idle_clients_from_locking_others_out():
    s = Settings().server
    assert s.connection_limit >= 1000 > 100 and s.channel_timeout_s <= 30 and s.cleanup_interval_s <= 10


@pytest.mark.parametrize("threads, processes, each", [(8, 1, 8), (8, 2, 4), (8, 3, 3), (3, 2, 2), (8, 16, 1), (1, 1, 1)])
def test_server_threads_are_shared_out_among_the_processes(threads, processes, each):
    from xpresso_env.http.server import waitress_options

    server = dataclasses.replace(Settings().server, threads=threads, processes=processes)
    assert server.threads_per_process == each
    assert waitress_options(server)["threads"] == each  # what each serving process's waitress runs
